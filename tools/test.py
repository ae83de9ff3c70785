"""Evaluates a checkpoint with the MMEngine Runner's test loop.

Example:
    python tools/test.py CONFIG CHECKPOINT --work-dir work_dirs/eval
"""
import argparse
import os
import os.path as osp

import finediffusion  # noqa: F401  (compatibility fixes before mmagic loads)
from mmengine.config import Config, DictAction
from mmengine.runner import Runner


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a model')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint to evaluate')
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
    cfg.load_from = args.checkpoint
    Runner.from_cfg(cfg).test()


if __name__ == '__main__':
    main()
