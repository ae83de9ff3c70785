"""Trains a model from a config with the MMEngine Runner.

Example:
    python tools/train.py configs/finediffusion_tiny_cpu.py --work-dir work_dirs/tiny
"""
import argparse
import os
import os.path as osp

import torch

import finediffusion  # noqa: F401,I001  (compatibility fixes first)
from finediffusion.engine import latest_checkpoint
from finediffusion.engine.distributed import use_cpu_distributed
from finediffusion.config import load_config
from mmengine.config import Config, DictAction
from mmengine.runner import Runner


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go')
    parser.add_argument(
        '--resume',
        nargs='?',
        const='auto',
        help='resume from this checkpoint, or with no value from the latest '
        'checkpoint in the work dir')
    parser.add_argument(
        '--amp', action='store_true', help='bf16 automatic mixed precision')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help="scale the learning rate by the total batch over the config's "
        'auto_scale_lr.base_batch_size')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, e.g. train_cfg.max_iters=10')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank (or --local_rank).
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def build_config(args: argparse.Namespace) -> Config:
    """Merges the command line into the config."""
    try:
        cfg = load_config(args.config, args.cfg_options)
    except ValueError as error:
        raise SystemExit(f'error: {error}')
    cfg.launcher = args.launcher
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = latest_checkpoint(cfg.work_dir)
    elif args.resume:
        cfg.resume = True
        cfg.load_from = args.resume
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg:
            raise SystemExit('error: --auto-scale-lr needs auto_scale_lr = '
                             'dict(base_batch_size=...) in the config')
        cfg.auto_scale_lr.enable = True
    if args.amp:
        # bf16 needs no loss scaling (and is what the H200 figures use).
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.dtype = 'bfloat16'

    return cfg


def main() -> None:
    # TF32 matrix products, as DiT's training script sets.
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    cfg = build_config(parse_args())
    if cfg.launcher == 'pytorch' and not torch.cuda.is_available():
        use_cpu_distributed(cfg)
    Runner.from_cfg(cfg).train()


if __name__ == '__main__':
    main()
