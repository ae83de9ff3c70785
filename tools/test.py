"""Evaluates a checkpoint or a delta with the MMEngine Runner's test loop.

Runs the config's test evaluators (e.g. FID, LPIPS diversity, classifier
fidelity) and writes their figures to WORK_DIR/metrics.json.

Example:
    python tools/test.py CONFIG delta.safetensors --work-dir work_dirs/eval
"""
import argparse
import json
import os
import os.path as osp

import torch

import finediffusion  # noqa: F401,I001  (compatibility fixes first)
from finediffusion.engine.distributed import use_cpu_distributed
from finediffusion.inference import check_weights_taxonomy
from finediffusion.models.checkpoint_io import delta_taxonomy, load_delta
from mmengine.config import Config, DictAction
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner


class KeepMetrics(Hook):
    """Keeps the test metrics: MMagic's MultiTestLoop.run returns None."""

    def after_test_epoch(self, runner, metrics=None) -> None:
        self.metrics = metrics


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a model')
    parser.add_argument('config', help='config file')
    parser.add_argument(
        'checkpoint', help='training checkpoint (.pth) or delta '
        '(.safetensors, applied to the config\'s base weights)')
    parser.add_argument('--work-dir', help='where logs and metrics go')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--precision', choices=['bfloat16', 'float32'],
                        default=None,
                        help='bfloat16: bf16 weights for the backbone; '
                        "float32: float32 throughout, the config's "
                        'model.autocast off. Default: bfloat16 on a GPU, '
                        'the config as it is on the CPU')
    parser.add_argument('--no-compile', action='store_true',
                        help="run the backbone eagerly even where the "
                        "config's model.compile asks for torch.compile")
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0])
    if cfg.launcher == 'pytorch' and not torch.cuda.is_available():
        use_cpu_distributed(cfg)
    if args.no_compile:
        cfg.model.compile = False
    precision = args.precision or ('bfloat16' if torch.cuda.is_available()
                                   else None)
    if precision == 'float32':
        cfg.model.autocast = None
    delta = args.checkpoint.endswith('.safetensors')
    cfg.load_from = None if delta else args.checkpoint
    runner = Runner.from_cfg(cfg)
    if delta:
        # A .pth checkpoint is compared by PEFTFreezeHook when it loads.
        check_weights_taxonomy(cfg, delta_taxonomy(args.checkpoint),
                               f'the delta {args.checkpoint}')
        load_delta(runner.model.module if is_model_wrapper(runner.model)
                   else runner.model, args.checkpoint)
    model = runner.model.module if is_model_wrapper(
        runner.model) else runner.model
    if precision == 'bfloat16' and hasattr(model, 'cast_backbone'):
        # Before the checkpoint loads (in runner.test): it is cast on copy.
        model.cast_backbone(torch.bfloat16)
    elif args.precision == 'bfloat16':
        raise SystemExit(f'error: --precision bfloat16: '
                         f'{type(model).__name__} has no bf16 weights mode')
    keep = KeepMetrics()
    runner.register_hook(keep, priority='LOWEST')
    runner.test()
    metrics = keep.metrics
    if get_rank() == 0:  # every rank holds the gathered metrics
        path = osp.join(cfg.work_dir, 'metrics.json')
        with open(path, 'w') as f:
            json.dump(metrics, f, indent=2, default=float)
        print(json.dumps(metrics, indent=2, default=float))
        print(f'metrics written to {path}')


if __name__ == '__main__':
    main()
