"""Trains a model from a config with the MMEngine Runner.

Example:
    python tools/train.py configs/finediffusion_tiny_cpu.py --work-dir work_dirs/tiny
"""
import argparse

import torch

import finediffusion  # noqa: F401,I001  (compatibility fixes first)
from finediffusion.engine import latest_checkpoint
from finediffusion.engine.distributed import (end_distributed,
                                              use_cpu_distributed)
from finediffusion.cli import (add_config_arguments, add_runner_arguments,
                               load_runner_config, parse_runner_args)
from mmengine.config import Config
from mmengine.runner import Runner


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model')
    add_config_arguments(
        parser, work_dir_help='where logs and checkpoints go')
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
    add_runner_arguments(
        parser, cfg_options_help='override config entries, e.g. '
        'train_cfg.max_iters=10')
    return parse_runner_args(parser)


def build_config(args: argparse.Namespace) -> Config:
    """Merges the command line into the config."""
    cfg = load_runner_config(args)
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
        # bf16 needs no loss scaling.
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
    end_distributed()


if __name__ == '__main__':
    main()
