"""Training throughput of shipped configs, through tools/train.py and the
MMEngine Runner, on stand-in data and weights.

Writes iNat 2021-format data (10,000 species, 11 supercategories) with
random JPEGs, random DiT weights in the official layout of the config's
backbone and a random SD-VAE-architecture folder (none can be downloaded
here); for a latent config it first makes the cache with
tools/cache_latents.py. Each setting then trains through tools/train.py with
a ``ThroughputHook`` and prints one JSON line: steady img/s, the share of
time spent waiting for data, peak GPU memory, the trainable share, the
dtypes seen in the backbone's matrix products, compile on or off.

Settings: ``config`` (as shipped, at --batch-size), and with --reference
the upstream-style ones at DiT's batch of 32: eager, EMA of every
parameter, no fused AdamW, in TF32 (``reference-tf32``) and in bf16 autocast
(``reference-bf16``); ``--reference bf16`` runs one of them. With --sample, tools/sample.py then generates
--sample-images images from the trained checkpoint (fine-grained CFG, SD-VAE
decode included) for each --sampler.

Examples:
    python tools/benchmark.py configs/finediffusion_inat_latents.py --reference
    python tools/benchmark.py configs/finediffusion_inat_latents.py --cfg-options model.trainable=full
    python tools/benchmark.py configs/finediffusion_inat_latents.py --gpus 2
    python tools/benchmark.py configs/finediffusion_inat.py --tiny --images 64 --batch-size 4 --iters 3 --warmup 1
"""
import argparse
import json
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import time
from typing import List, Optional

import torch
from mmengine.config import Config, DictAction

import finediffusion  # noqa: F401,I001  (compatibility fixes first)
from finediffusion.cli import non_negative_int, positive_int
from finediffusion.config import load_config
from finediffusion.stand_ins import (write_inat, write_official_dit,
                                     write_sd_vae)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# A backbone small enough for a CPU (--tiny).
TINY_ARCH = dict(depth=2, hidden_size=64, num_heads=4)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('configs', nargs='+', help='training configs')
    parser.add_argument('--root', default='work_dirs/benchmark',
                        help='fixtures, caches and runs (reused)')
    parser.add_argument('--images', type=positive_int, default=4096,
                        help='training images of the stand-in dataset')
    parser.add_argument('--batch-size', type=positive_int, default=256,
                        help='per GPU, for the config setting')
    parser.add_argument('--iters', type=positive_int, default=20,
                        help='timed iterations')
    parser.add_argument('--warmup', type=non_negative_int, default=10,
                        help='iterations before timing (compilation)')
    parser.add_argument('--reference', nargs='*', choices=['tf32', 'bf16'],
                        default=None,
                        help='also run the upstream-style settings (both '
                        'when none is named)')
    parser.add_argument('--gpus', type=positive_int, default=1,
                        help='train through tools/dist_train.sh on this many '
                        'GPUs (NCCL) when more than one')
    parser.add_argument('--amp', action='store_true',
                        help='pass --amp to tools/train.py')
    parser.add_argument('--sample', action='store_true',
                        help='then time tools/sample.py on the checkpoint')
    parser.add_argument('--sample-images', type=positive_int, default=512)
    parser.add_argument('--sample-batch-size', type=positive_int, default=256)
    parser.add_argument('--samplers', nargs='+', default=['dpm++:25',
                                                          'ddpm:250'],
                        help='SAMPLER:STEPS for tools/sample.py')
    parser.add_argument('--tiny', action='store_true',
                        help='a 2-block DiT and a few-channel VAE (CPU)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override entries of every config')
    parser.add_argument('--timeout', type=positive_int, default=1800,
                        help='seconds a tool may run: then its Python stacks '
                        'go to its log and it is stopped (the other '
                        'settings still run)')
    return parser.parse_args()


def run_tool(args: List[str], log: str, timeout: float,
             env: Optional[dict] = None) -> float:
    """Runs a tool of this repository (a Python script, or a shell script
    run with bash), its output to ``log``; the wall time, or SystemExit with
    the log's end. A tool still running after ``timeout`` seconds gets
    SIGABRT (Python's faulthandler writes every thread's stack to the log),
    then SIGKILL: it and every process it started, also those in sessions
    of their own (torchrun starts each rank of dist_train.sh so)."""
    start = time.perf_counter()
    runner = ['bash'] if args[0].endswith('.sh') else [sys.executable]
    env = dict(os.environ if env is None else env, PYTHONFAULTHANDLER='1')
    with open(log, 'w') as f:
        process = subprocess.Popen([*runner, *args], stdout=f,
                                   stderr=subprocess.STDOUT, cwd=REPO,
                                   env=env, start_new_session=True)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            code = f'stopped after {timeout} s'
            # Found before any dies: a dead parent's children move to init.
            tree = [process.pid] + _descendants(process.pid)
            _signal(tree, signal.SIGABRT)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                pass
            _signal(tree + _descendants(process.pid), signal.SIGKILL)
            process.wait()
    if code:
        with open(log) as f:
            sys.stderr.write(f.read()[-6000:])
        raise SystemExit(f'{args[0]} failed ({code}), log: {log}')
    return time.perf_counter() - start


def _descendants(pid: int) -> List[int]:
    """The processes below ``pid`` (from /proc), children first."""
    children = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as f:
                    ppid = int(f.read().rsplit(')', 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _signal(pids: List[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def fixtures(args: argparse.Namespace, cfg: Config) -> dict:
    """Writes (once) the stand-ins the configs read."""
    paths = dict(data=osp.join(args.root, 'inat'),
                 dit=osp.join(args.root, f'dit_{cfg_key(cfg)}.pt'),
                 vae=osp.join(args.root,
                              'vae_tiny' if args.tiny else 'sd_vae'))
    if not osp.isfile(osp.join(paths['data'], 'val.json')):
        write_inat(paths['data'], args.images)
    if not osp.isfile(paths['dit']):
        write_official_dit(paths['dit'], cfg.model.backbone,
                           'cuda' if torch.cuda.is_available() else None)
    if not osp.isdir(paths['vae']):
        write_sd_vae(paths['vae'], tiny=args.tiny)
    return paths


def cfg_key(cfg: Config) -> str:
    backbone = cfg.model.backbone
    return re.sub(r'\W+', '', f'{backbone.arch}_{backbone.input_size}')


def point_at(cfg: Config, paths: dict) -> None:
    """Points the config's data, weights and VAE at the stand-ins; no
    validation, no checkpoint before the end."""
    for spec in (cfg.model.backbone.taxonomy, cfg.train_dataloader.dataset):
        if isinstance(spec, dict) and 'data_root' in spec:
            spec.data_root = paths['data']
    cfg.model.backbone.pretrained = paths['dit']
    cfg.model.vae.from_pretrained = paths['vae']
    for key in ('val_cfg', 'val_dataloader', 'val_evaluator', 'test_cfg',
                'test_dataloader', 'test_evaluator'):
        cfg.pop(key, None)
    cfg.train_cfg.pop('val_interval', None)


def latent_cache(args: argparse.Namespace, cfg: Config, paths: dict,
                 name: str) -> Optional[dict]:
    """For a latent config: makes its cache from the images with
    tools/cache_latents.py (once) and points the config at it; the tool's
    figures, or None for an image config."""
    dataset = cfg.train_dataloader.dataset
    if dataset.get('type') != 'LatentDataset':
        return None
    cache = osp.join(args.root, 'latents')
    images = Config(dict(cfg.to_dict()))
    images.train_dataloader.dataset = dict(**cfg.taxonomy,
                                           pipeline=cfg.train_pipeline)
    images.train_dataloader.dataset.data_root = paths['data']
    images.model.backbone.taxonomy = dict(**cfg.taxonomy)
    images.model.backbone.taxonomy.data_root = paths['data']
    config = osp.join(args.root, f'{name}_images.py')
    images.dump(config)
    log = osp.join(args.root, f'{name}_cache.log')
    report = None
    if not osp.isfile(osp.join(cache, 'manifest.json')):
        wall = run_tool(['tools/cache_latents.py', config, cache], log,
                        args.timeout)
        with open(log) as f:
            text = f.read()
        rate = re.findall(r', ([\d.]+) img/s$', text, re.M)
        steady = re.findall(r'compilation included\): ([\d.]+) img/s$',
                            text, re.M)
        report = dict(setting='tools/cache_latents.py', images=args.images,
                      wall_s=round(wall, 1),
                      img_per_s=float(rate[-1]) if rate else None,
                      steady_img_per_s=float(steady[-1]) if steady else None)
    for spec in (dataset, cfg.model.backbone.taxonomy):
        spec.cache_dir = cache
    return report


def settings(args: argparse.Namespace) -> List[tuple]:
    """(name, batch size, config changes, extra hooks)."""
    out = [('config', args.batch_size, {}, [])]
    if args.reference is None:
        return out
    upstream = {'model.compile': False, 'model.ema_decay': None,
                'optim_wrapper.optimizer.fused': False}
    precisions = dict(tf32=None, bf16=dict(cuda='bfloat16'))
    for name in args.reference or precisions:
        out.append((f'reference-{name}', 32,
                    dict(upstream, **{'model.autocast': precisions[name]}),
                    [dict(type='FullEMAHook')]))
    return out


def train(args: argparse.Namespace, cfg: Config, name: str, setting: tuple,
          config_name: str) -> dict:
    label, batch, changes, hooks = setting
    run = Config(dict(cfg.to_dict()))
    run.merge_from_dict(changes)
    run.train_dataloader.batch_size = batch
    run.train_cfg.max_iters = args.warmup + 1 + args.iters
    run.default_hooks.checkpoint.interval = run.train_cfg.max_iters
    run.default_hooks.logger.interval = max(1, args.iters // 2)
    run.custom_hooks = list(run.get('custom_hooks', [])) + hooks + [
        dict(type='ThroughputHook', warmup=args.warmup)]
    config = osp.join(args.root, f'{name}_{label}.py')
    run.dump(config)
    work = osp.join(args.root, 'runs', f'{name}_{label}')
    command = (['tools/train.py', config] if args.gpus == 1 else
               ['tools/dist_train.sh', config, str(args.gpus)])
    command += ['--work-dir', work]
    if args.amp:
        command.append('--amp')
    wall = run_tool(command, osp.join(args.root, f'{name}_{label}.log'),
                    args.timeout)
    with open(osp.join(work, 'throughput.json')) as f:
        report = json.load(f)
    return dict(config=config_name, setting=label, gpus=args.gpus,
                wall_s=round(wall, 1), **report, checkpoint=osp.join(
                    work, f'iter_{run.train_cfg.max_iters}.pth'),
                dumped_config=config)


def sample(args: argparse.Namespace, trained: dict) -> List[dict]:
    """tools/sample.py on a trained checkpoint, per sampler."""
    reports = []
    classes = [str(i) for i in range(args.sample_images // 4)]
    for spec in args.samplers:
        sampler, steps = spec.split(':')
        out = osp.join(args.root, 'samples', f'{sampler}_{steps}')
        log = out + '.log'
        os.makedirs(out, exist_ok=True)
        setting = f'tools/sample.py --sampler {sampler} --steps {steps}'
        try:
            wall = run_tool(['tools/sample.py', trained['dumped_config'],
                             trained['checkpoint'], '--classes', *classes,
                             '-n', '4', '--sampler', sampler, '--steps',
                             steps, '--batch-size',
                             str(args.sample_batch_size), '--out', out], log,
                            args.timeout)
        except SystemExit as error:
            # The other samplers still run; the log's end was printed.
            reports.append(dict(setting=setting, error=str(error)))
            continue
        with open(log) as f:
            text = f.read()
        rates = re.findall(r'batch \d+: \d+ images, ([\d.]+) img/s', text)
        reports.append(dict(
            setting=setting, images=len(classes) * 4,
            batch_size=args.sample_batch_size, wall_s=round(wall, 1),
            batch_img_per_s=[float(r) for r in rates],
            steady_img_per_s=float(rates[-1]) if rates else None))
    return reports


def main() -> None:
    args = parse_args()
    os.makedirs(args.root, exist_ok=True)
    results = []
    for path in args.configs:
        cfg = load_config(path, args.cfg_options)
        if args.tiny:
            cfg.model.backbone.arch = TINY_ARCH
        name = osp.splitext(osp.basename(path))[0]
        paths = fixtures(args, cfg)
        point_at(cfg, paths)
        try:
            cache = latent_cache(args, cfg, paths, name)
        except SystemExit as error:
            # The next configs still run; the log's end was printed.
            results.append(dict(config=path, setting='tools/cache_latents.py',
                                error=str(error)))
            print(json.dumps(results[-1]), flush=True)
            continue
        if cache is not None:
            results.append(dict(config=path, **cache))
            print(json.dumps(results[-1]), flush=True)
        trained = []
        for setting in settings(args):
            try:
                trained.append(train(args, cfg, name, setting, path))
            except SystemExit as error:
                # The other settings still run; the log's end was printed.
                results.append(dict(config=path, setting=setting[0],
                                    error=str(error)))
            else:
                results.append(trained[-1])
            print(json.dumps(results[-1]), flush=True)
        if args.sample and trained and trained[0]['setting'] == 'config':
            for report in sample(args, trained[0]):
                results.append(dict(config=path, **report))
                print(json.dumps(results[-1]), flush=True)
    with open(osp.join(args.root, 'benchmark.json'), 'w') as f:
        json.dump(dict(device=(torch.cuda.get_device_name()
                               if torch.cuda.is_available() else 'cpu'),
                       torch=torch.__version__, argv=sys.argv[1:],
                       results=results), f, indent=1)


if __name__ == '__main__':
    main()
