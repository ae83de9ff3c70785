"""Makes MMagic 1.2.0, mmpretrain 1.2.0, MMEngine 0.10.7 and mmcv 2.1.0 run
on current torch, numpy, scipy and PyAV.

The OpenMMLab stack is unmaintained since 2023-24. Each fix patches one
module and lives in a submodule named for what it fixes; :data:`FIXES` maps
the module a fix patches to the function that applies it. :func:`install`
puts a finder on ``sys.meta_path`` that applies each fix right after its
module is first imported (or at once, for modules already imported), so a
fix costs nothing until the code it fixes is used: ``python -c pass`` stays
as fast as the bare interpreter, and a plain ``import mmagic.models`` works.

In the project's environment a ``.pth`` line (``tools/setup_env.sh``) runs
:func:`install` at interpreter start; ``import finediffusion`` runs it too,
for environments without that line. This module imports nothing but the
standard library: the ``.pth`` line loads it by path, without running
``finediffusion/__init__.py``. Every fix is idempotent and its docstring
says what breaks without it.
"""
import importlib
import importlib.abc
import sys
from typing import Callable, Dict

# module -> 'submodule:function' of this package, called with the module
# right after it is imported. MMEngine is imported before any code of mmcv,
# mmagic or mmpretrain runs, so the fixes of numpy, scipy and torch are
# keyed to it.
FIXES: Dict[str, str] = {
    'mmengine': 'numpy2:fix_numpy',
    'mmengine.logging.history_buffer': 'torch_load:allow_mmengine_types',
    'mmengine.optim.optimizer.default_constructor':
    'optimizers:fix_default_constructor',
    'scipy.linalg': 'scipy_sqrtm:fix_sqrtm',
    'mmagic.engine.schedulers.reduce_lr_scheduler':
    'schedulers:fix_reduce_lr',
    'mmagic.evaluation.metrics.psnr': 'psnr:fix_psnr',
    'mmagic.evaluation.metrics.base_gen_metric':
    'gen_metrics:fix_conditional_sampler',
    'mmagic.models.editors.dcgan.dcgan_discriminator':
    'gan_init:fix_dcgan_discriminator',
    'mmagic.models.utils.model_utils': 'gan_init:fix_generation_init_weights',
    'mmagic.models.editors.stylegan1.stylegan1_modules':
    'noise:fix_noise_injection',
}


def _fix(name: str) -> Callable:
    submodule, function = FIXES[name].split(':')
    return getattr(importlib.import_module(f'{__name__}.{submodule}'),
                   function)


class FixingFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of :data:`FIXES` with the other finders and makes
    their loader apply the fix after executing the module."""

    # Marks every copy of this class: a process that loads this module twice
    # (by path and as a package member) must keep one finder, and one
    # finder must never ask another.
    fixes_imports = True

    def find_spec(self, name: str, path=None, target=None):
        if name not in FIXES:
            return None
        for finder in sys.meta_path:
            if getattr(finder, 'fixes_imports', False) or \
                    not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, 'exec_module'):
            return spec
        execute = loader.exec_module

        def exec_module(module) -> None:
            execute(module)
            _fix(name)(module)

        # The loader is this module's own instance (file finders make one
        # per spec), so the instance attribute changes nothing else.
        loader.exec_module = exec_module
        return spec


def install() -> None:
    """Applies the fixes of modules already imported and puts
    :class:`FixingFinder` first on ``sys.meta_path`` (once per process)."""
    if not any(getattr(f, 'fixes_imports', False) for f in sys.meta_path):
        sys.meta_path.insert(0, FixingFinder())
    for name in FIXES:
        module = sys.modules.get(name)
        if module is not None and getattr(module, '__spec__', None) and \
                not getattr(module.__spec__, '_initializing', False):
            _fix(name)(module)


def fix_runner() -> None:
    """The fixes of ``mmengine.runner`` (:mod:`.runner`): atomic checkpoint
    writes and weights-only reading, applied by ``import finediffusion``."""
    from .runner import fix_runner as fix
    fix()


install()
