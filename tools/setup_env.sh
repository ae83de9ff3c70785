#!/usr/bin/env bash
# Creates or reuses the project's environment, then prints nothing but errors.
#
# Two layers, so that a fresh clone is ready in seconds once a machine has
# built the stack:
#   - a base virtualenv under $FD_HOME (default ~/.cache/finediffusion), keyed
#     by the hash of requirements/lock.txt and of this script: every pinned
#     package, plus mmcv 2.1.0 compiled with its ops (no wheel exists on the
#     registry). The compiled mmcv wheel is kept in $FD_HOME/wheels/<torch>/,
#     so a changed lock rebuilds the venv without recompiling mmcv (~12 min);
#   - .venv in the checkout: a bare venv that sees the base through a .pth
#     file and holds the editable install of this project.
# Environment: PYTHON (interpreter, default python3), FD_HOME.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
home=${FD_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/finediffusion}
python=${PYTHON:-python3}
lock=$root/requirements/lock.txt

"$python" - <<'PY' || { echo "setup_env: Python 3.10-3.12 is required (set PYTHON=...)" >&2; exit 1; }
import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))
PY

key=$(cat "$lock" "$root/requirements/build.txt" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-12)
base=$home/base-$key
# --no-warn-conflicts: mmagic and mmpretrain are installed without the extras
# they declare that nothing imports at run time (mediapipe, clip, ...); the
# ones MMagic's modules import (controlnet_aux, face_alignment) are in the lock.
pip_base=("$base/bin/python" -m pip install -q --no-input --disable-pip-version-check --no-warn-conflicts)

build_mmcv() {
  # mmcv's setup.py needs pkg_resources from setuptools < 70 and passes
  # -std=c++17, while torch >= 2.13 headers need C++20: a compiler wrapper
  # appends -std=c++20 (the last -std wins).
  local torch_tag=$1 out=$2 cxx
  command -v g++ >/dev/null || { echo "setup_env: g++ is needed to build mmcv (apt-get install g++)" >&2; exit 1; }
  cxx=$(mktemp -d)
  printf '#!/bin/sh\nexec g++ "$@" -std=c++20\n' > "$cxx/g++"; chmod +x "$cxx/g++"
  echo "setup_env: compiling mmcv 2.1.0 with ops against torch $torch_tag (about 12 min on 2 cores, once)"
  "${pip_base[@]}" -r "$root/requirements/build.txt"
  mkdir -p "$out.partial"
  CXX=$cxx/g++ MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
    "$base/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$out.partial" mmcv==2.1.0
  mv "$out.partial" "$out"
  rm -rf "$cxx"
}

if [ ! -f "$base/.complete" ]; then
  echo "setup_env: building the base environment $base"
  rm -rf "$base"
  mkdir -p "$home"
  "$python" -m venv "$base"
  "${pip_base[@]}" --no-deps -r "$lock"
  torch_tag=$("$base/bin/python" -c 'import torch; print(torch.__version__)')
  wheels=$home/wheels/torch-$torch_tag
  [ -d "$wheels" ] || build_mmcv "$torch_tag" "$wheels"
  # The lock's setuptools (with pkg_resources, which mmengine needs at run time)
  # replaces the build one.
  "${pip_base[@]}" --no-deps "$wheels"/mmcv-2.1.0-*.whl $(grep -E '^setuptools==' "$lock")
  "$base/bin/python" -c 'import mmcv.ops' || { echo "setup_env: mmcv ops do not import" >&2; exit 1; }
  touch "$base/.complete"
fi

venv=$root/.venv
stamp=$key-$(sha256sum "$root/setup.py" | cut -c1-12)
if [ "$(cat "$venv/.fd-stamp" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$venv"
  "$python" -m venv --without-pip "$venv"
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
  base_site=$("$base/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
  # addsitedir, not a bare path: the base's own .pth files must run too.
  echo "import site; site.addsitedir('$base_site')" > "$site/_finediffusion_base.pth"
  # Installs the import hook of the compatibility fixes at interpreter start
  # (finediffusion/compat/__init__.py, standard library only), so that a
  # plain `import mmagic.models` works in this environment; each fix runs
  # when the module it patches is first imported. Loaded by path: importing
  # it as finediffusion.compat would first run the package's __init__,
  # which imports all of MMagic.
  compat=$root/projects/finediffusion/compat
  echo "import importlib.util, sys; spec = importlib.util.spec_from_file_location('finediffusion.compat', '$compat/__init__.py', submodule_search_locations=['$compat']); sys.modules[spec.name] = importlib.util.module_from_spec(spec); spec.loader.exec_module(sys.modules[spec.name])" \
    > "$site/finediffusion_compat.pth"
  (cd "$root" && "$venv/bin/python" -m pip install -q --no-input --disable-pip-version-check \
     --no-deps --no-build-isolation -e .)
  echo "$stamp" > "$venv/.fd-stamp"
fi
