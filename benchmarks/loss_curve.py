"""The demo's pretraining loss curve in float32 against bf16 with a compiled
backbone, through tools/train.py: the fast path must train as float32 does.

Writes the demo's synthetic image sets at a scale of ``tools/demo.py``
(``SCALES``), then trains that scale's pretraining config
(``configs/synthetic/pretrain_base.py`` or ``configs/synthetic/gpu/``) for
``--iters`` steps in each setting, every iteration logged, and prints one
JSON line: each setting's per-iteration losses and its distance from the
float32 curve (each run's losses also as a line of their own when it
ends).

Settings (the same seed, so the same data order, timesteps and noise):

- ``float32``: float32 weights and matrix products (on CUDA with
  ``NVIDIA_TF32_OVERRIDE=0``: tools/train.py turns TF32 on, as DiT's
  training script does), eager.
- ``bf16``: ``--amp`` (MMEngine's AmpOptimWrapper, bf16) and the
  backbone compiled (``model.compile``), as the shipped GPU configs train.
- ``float32_seed1``: float32 with another seed: the size of a difference
  that is only the draw of data, timesteps and noise.

The distances are over windows of ``--window`` iterations (the per-iteration
loss is dominated by each batch's timesteps): the largest relative
difference of a window's mean loss from float32's.

Example:
    python benchmarks/loss_curve.py --scale gpu --iters 200
    python benchmarks/loss_curve.py --scale cpu --iters 20 --window 5  # CPU
"""
import argparse
import json
import os
import os.path as osp
import sys
import tempfile
from typing import Dict, List

import numpy as np
import torch

from finediffusion.cli import cfg_options
from finediffusion.config import load_config
from finediffusion.tool_runs import ToolFailed, logged_scalars, run_logged

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools'))
import demo  # noqa: E402  (tools/demo.py: the scales and the data stage)


def parse_args() -> argparse.Namespace:
    """The command line (scale, iterations, window, batch, root)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--scale', choices=sorted(demo.SCALES),
                        default='gpu' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--iters', type=int, default=200)
    parser.add_argument('--window', type=int, default=20)
    parser.add_argument('--batch-size', type=int,
                        help="defaults to the scale's pretraining batch")
    parser.add_argument('--root', help='data and work dirs (default: a '
                        'temporary folder)')
    parser.add_argument('--no-compile', action='store_true',
                        help='bf16 eager (inductor needs a C++ compiler '
                        'on the CPU)')
    return parser.parse_args()


def settings(device: str, compile: bool) -> Dict[str, dict]:
    """Each setting's tools/train.py flags, config options and variables."""
    strict = {'NVIDIA_TF32_OVERRIDE': '0'}
    return {
        'float32': dict(flags=[], options={}, env=strict),
        'bf16':
        dict(flags=['--amp'] if device == 'cuda' else [],
             options={
                 # MMEngine's AmpOptimWrapper needs a GPU: on the CPU the
                 # model's own autocast stands in for it.
                 'model.autocast': None if device == 'cuda' else 'bfloat16',
                 **({'model.compile.devices': [device]} if compile else {})},
             env={}),
        'float32_seed1': dict(flags=[], options={'randomness.seed': 1},
                              env=strict),
    }


def losses(work_dir: str) -> List[float]:
    """The per-iteration losses of a run's vis_data/scalars.json."""
    return logged_scalars(work_dir, 'loss')


def window_distance(curve: List[float], reference: List[float],
                    window: int) -> float:
    """The largest relative difference of a window's mean loss."""
    n = min(len(curve), len(reference)) // window * window
    a = np.asarray(curve[:n]).reshape(-1, window).mean(1)
    b = np.asarray(reference[:n]).reshape(-1, window).mean(1)
    return float(np.max(np.abs(a - b) / b))


def main() -> None:
    """Trains every setting and prints the curves and their distances."""
    args = parse_args()
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    root = args.root or tempfile.mkdtemp(prefix='loss_curve_')
    stages = demo.Stages(demo.SCALES[args.scale], osp.join(root, 'work'),
                         osp.join(root, 'data'), seed=0)
    stages.data()
    config = osp.join(ROOT, stages.configs['pretrain'])
    batch = (args.batch_size or
             load_config(config).train_dataloader.batch_size)
    options = {
        'data_root': osp.join(stages.base, 'train'),
        'model.autocast': None,
        'train_dataloader.batch_size': batch,
        'train_cfg.max_iters': args.iters,
        'param_scheduler.0.end': min(50, args.iters),
        'randomness.seed': 0,
        'default_hooks.logger.interval': 1,
        'log_processor.window_size': 1,
        'default_hooks.checkpoint.save_last': False,
    }
    report = dict(scale=args.scale, device=(
        torch.cuda.get_device_name() if device == 'cuda' else 'cpu'),
                  iters=args.iters, batch_size=batch, window=args.window,
                  torch=torch.__version__, settings={})
    curves = {}
    for name, s in settings(device, not args.no_compile).items():
        work_dir = osp.join(root, 'work', name)
        opts = {**options, **s['options']}
        cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), config,
               '--work-dir', work_dir, *s['flags'], '--cfg-options',
               *cfg_options(opts)]
        try:
            run_logged(cmd, osp.join(work_dir, 'train.log'),
                       env={**os.environ, **s['env']}, tail_lines=20)
        except ToolFailed as error:
            raise SystemExit(f'{name}: {error}')
        curves[name] = losses(work_dir)
        report['settings'][name] = dict(
            flags=s['flags'], options=s['options'],
            loss=[round(v, 5) for v in curves[name]])
        # Each run as it ends: a later one may not finish in the caller's
        # time.
        print(json.dumps(dict(setting=name,
                              **report['settings'][name])), flush=True)
    for name, curve in curves.items():
        if name != 'float32':
            report['settings'][name]['max_window_rel_diff'] = round(
                window_distance(curve, curves['float32'], args.window), 5)
    print(json.dumps(report))


if __name__ == '__main__':
    main()
