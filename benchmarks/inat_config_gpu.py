"""The users' config, configs/finediffusion_inat.py, on one GPU: synthetic
data in the iNat 2021 format (10,000 species in 11 supercategories), random
weights in the official DiT layout and a random SD-VAE folder, since neither
the data nor the weights can be downloaded here.

Steps (--steps): write the fixtures; train 200 iterations (checkpoints at
100 and 200); resume from iteration 100; fid: sample 128 images and score
FID through tools/test.py (25 DPM-Solver++ steps, a random stand-in
Inception). Prints one JSON line per step with its figures.

Example:
    python benchmarks/inat_config_gpu.py --root /tmp/inat_run
"""
import argparse
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time

import finediffusion  # noqa: F401,I001  (compatibility fixes first)
from finediffusion.stand_ins import (write_inat, write_inception,
                                     write_official_dit, write_sd_vae)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def write_weights(root: str, backbone: dict) -> None:
    """Random DiT-XL-2-256 in the official layout, a random SD-VAE folder
    and a random TorchScript stand-in for FID's Inception."""
    write_official_dit(osp.join(root, 'DiT-XL-2-256x256.pt'), backbone,
                       'cuda')
    write_sd_vae(osp.join(root, 'sd-vae-ft-ema'))
    write_inception(osp.join(root, 'inception-2015-12-05.pt'))


def run(args: list, log: str) -> float:
    start = time.perf_counter()
    with open(log, 'w') as f:
        code = subprocess.call([sys.executable, *args], stdout=f,
                               stderr=subprocess.STDOUT, cwd=REPO)
    if code:
        with open(log) as f:
            print(f.read()[-4000:])
        raise SystemExit(f'{args[0]} failed ({code})')
    return time.perf_counter() - start


def iter_times(log: str) -> list:
    with open(log) as f:
        text = f.read()
    return [(int(i), float(t), int(m)) for i, t, m in re.findall(
        r'Iter\(train\) \[\s*(\d+)/\d+\].*?time: ([\d.]+).*?memory: (\d+)',
        text)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--root', default='/tmp/inat_run')
    parser.add_argument('--images', type=int, default=2048)
    parser.add_argument('--steps', default='train,resume',
                        help='comma-separated: train, resume, fid')
    args = parser.parse_args()
    os.makedirs(args.root, exist_ok=True)
    data, work = osp.join(args.root, 'inat'), osp.join(args.root, 'work')
    t0 = time.perf_counter()
    write_inat(data, args.images)
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'finediffusion_inat.py'))
    write_weights(args.root, cfg.model.backbone)
    print(json.dumps(dict(step='fixtures',
                          seconds=round(time.perf_counter() - t0, 1))),
          flush=True)
    cfg.model.backbone.taxonomy.data_root = data
    cfg.train_dataloader.dataset.data_root = data
    cfg.test_dataloader.dataset.data_root = data
    cfg.model.backbone.pretrained = f'{args.root}/DiT-XL-2-256x256.pt'
    cfg.model.vae.from_pretrained = f'{args.root}/sd-vae-ft-ema'
    for key in ('val_cfg', 'val_dataloader', 'val_evaluator'):
        cfg.pop(key)
    cfg.train_cfg.pop('val_interval')
    cfg.default_hooks.checkpoint.interval = 100
    cfg.default_hooks.logger.interval = 20
    cfg.log_processor.window_size = 20
    cfg.test_evaluator.metrics = [
        dict(type='ConditionalFID', fake_nums=128, prefix='FID-128',
             inception_path=f'{args.root}/inception-2015-12-05.pt',
             sample_kwargs=dict(
                 num_sampling_steps=25,
                 scheduler=dict(type='DPMSolverMultistepScheduler')))
    ]
    config = osp.join(args.root, 'inat_run.py')
    cfg.dump(config)

    steps = args.steps.split(',')
    if 'train' in steps:
        train(args.root, config, work)
    if 'resume' in steps:
        resume(args.root, config, work)
    if 'fid' in steps:
        # The official-layout base alone when no training ran.
        weights = osp.join(work, 'iter_200.pth')
        if not osp.isfile(weights):
            weights = f'{args.root}/DiT-XL-2-256x256.pt'
        fid(args.root, config, weights)


def train(root: str, config: str, work: str) -> None:
    log = osp.join(root, 'train.log')
    seconds = run(['tools/train.py', config, '--work-dir', work,
                   '--cfg-options', 'train_cfg.max_iters=200'], log)
    times = iter_times(log)
    steady = [t for i, t, _ in times if i > 40]
    print(json.dumps(dict(
        step='train 200 iterations, batch 32, VAE encode on the fly',
        wall_s=round(seconds, 1),
        img_per_s=round(32 / (sum(steady) / len(steady)), 1),
        peak_memory_mib=max(m for _, _, m in times),
        checkpoints=sorted(f for f in os.listdir(work)
                           if f.endswith('.pth')))), flush=True)


def resume(root: str, config: str, work: str) -> None:
    log = osp.join(root, 'resume.log')
    seconds = run(['tools/train.py', config, '--work-dir', work, '--resume',
                   osp.join(work, 'iter_100.pth'), '--cfg-options',
                   'train_cfg.max_iters=120'], log)
    print(json.dumps(dict(step='resume from iter_100.pth to 120',
                          wall_s=round(seconds, 1),
                          logged_iters=[i for i, _, _ in iter_times(log)])),
          flush=True)


def fid(root: str, config: str, weights: str) -> None:
    seconds = run(['tools/test.py', config, weights,
                   '--work-dir', osp.join(root, 'eval')],
                  osp.join(root, 'test.log'))
    with open(osp.join(root, 'eval', 'metrics.json')) as f:
        metrics = json.load(f)
    print(json.dumps(dict(step='tools/test.py: 128 samples, FID',
                          wall_s=round(seconds, 1), metrics=metrics)),
          flush=True)

if __name__ == '__main__':
    main()
