"""Evaluates a checkpoint or a delta with the MMEngine Runner's test loop.

Runs the config's test evaluators (e.g. FID, LPIPS diversity, classifier
fidelity) and writes their figures to WORK_DIR/metrics.json.

Example:
    python tools/test.py CONFIG delta.safetensors --work-dir work_dirs/eval
"""
import argparse
import json
import os.path as osp

import torch

import finediffusion  # noqa: F401,I001  (compatibility fixes first)
from finediffusion.cli import (add_config_arguments, add_runner_arguments,
                               load_runner_config, parse_runner_args)
from finediffusion.engine.distributed import (end_distributed,
                                              use_cpu_distributed)
from finediffusion.inference import (add_precision_arguments,
                                      apply_precision,
                                      check_weights_taxonomy)
from finediffusion.delta import delta_taxonomy, load_delta
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
    add_config_arguments(parser, work_dir_help='where logs and metrics go')
    parser.add_argument(
        'checkpoint', help='training checkpoint (.pth) or delta '
        '(.safetensors, applied to the config\'s base weights)')
    add_runner_arguments(parser)
    add_precision_arguments(parser)
    return parse_runner_args(parser)


def main() -> None:
    args = parse_args()
    cfg = load_runner_config(args)
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
    end_distributed()


if __name__ == '__main__':
    main()
