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
from finediffusion.inference import (add_precision_arguments,
                                      apply_precision,
                                      check_weights_taxonomy)
from finediffusion.delta import delta_taxonomy, load_delta
from finediffusion.config import load_config
from mmengine.config import DictAction
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
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_precision_arguments(parser)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main() -> None:
    args = parse_args()
    try:
        cfg = load_config(args.config, args.cfg_options)
    except ValueError as error:
        raise SystemExit(f'error: {error}')
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0])
    if cfg.launcher == 'pytorch' and not torch.cuda.is_available():
        use_cpu_distributed(cfg)
    precision = apply_precision(cfg, args, torch.cuda.is_available())
    delta = args.checkpoint.endswith('.safetensors')
    cfg.load_from = None if delta else args.checkpoint
    runner = Runner.from_cfg(cfg)
    model = runner.model.module if is_model_wrapper(
        runner.model) else runner.model
    if delta:
        # A .pth checkpoint is compared by PEFTCheckpointHook when it loads.
        check_weights_taxonomy(cfg, delta_taxonomy(args.checkpoint),
                               f'the delta {args.checkpoint}')
        load_delta(model, args.checkpoint)
    if precision == 'bfloat16':
        # Before the checkpoint loads (in runner.test): it is cast on copy.
        model.cast_backbone(torch.bfloat16)
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
