"""The main job on a built-in default: FineDiffusion on a synthetic
fine-grained taxonomy, end to end, with a measured result.

Stages (each skipped when its output exists for the same settings):

1. write the synthetic base and fine-grained image sets (data/synthetic);
2. train the judge, an mmpretrain classifier of the fine subclasses
   (configs/synthetic/judge.py), and score it on held-out real images;
3. pretrain a small TieredDiT fully on the base taxonomy
   (configs/synthetic/pretrain_base.py) and export it in the official DiT
   layout;
4. FineDiffusion PEFT fine-tuning on the fine taxonomy
   (configs/finediffusion_synthetic.py), both through tools/train.py;
5. sample every subclass with fine-grained CFG, standard CFG and no
   guidance, judge the samples, and write a grid PNG, metrics JSON and
   table under the work dir.

``--experiment`` adds the paper's two comparisons: a guidance-scale sweep
(1-6) of fine-grained against standard CFG on the same model, and PEFT
against full fine-tuning and BitFit.

Example:
    python tools/demo.py                 # 2 CPU cores: about 9 minutes
    python tools/demo.py --scale gpu --experiment
"""
import argparse
import hashlib
import json
import os
import os.path as osp
import subprocess
import sys
import time
from typing import Dict, List, Tuple

import numpy as np
import torch

import finediffusion  # noqa: F401,I001  (compatibility fixes first)
from finediffusion.config import load_config
from finediffusion.datasets.synthetic import write_synthetic_hierarchy
from finediffusion.evaluation.judge import (Judge, accuracy,
                                            intra_class_spread)
from finediffusion.inference import export_base, load_for_sampling
from finediffusion.models.guidance import FineGrainedCFG
from finediffusion.models.peft import trainable_count
from finediffusion.visualization import class_grid
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
JUDGE_CONFIG = 'configs/synthetic/judge.py'
BASE_CONFIG = 'configs/synthetic/pretrain_base.py'
FINE_CONFIG = 'configs/finediffusion_synthetic.py'

# Every stage grows with the scale. 'cpu' runs the main job in about nine
# minutes on 2 cores; 'gpu' in about nine on one H100 (with --experiment).
# The learning rates, min-SNR weighting, guidance scale and the split between
# pretraining and fine-tuning come from GPU sweeps of the 'cpu' budget
# (2026-11-26). There, 8 or 10 DPM-Solver++ steps judged as well as 20, and
# the time they save went to training and samples: with 1,950 + 910
# iterations instead of 1,500 + 700, fine-grained CFG's lead over unguided
# sampling rose from 1.7-4.4 points (5 runs) to 3.6-7.4 (15 runs); with 600
# samples its 95% interval was about +-4 points, with 1,000 about +-3.
SCALES = {
    'cpu':
    dict(
        images=dict(base=150, fine=100, val=20),
        judge=dict(iters=300, batch=128),
        model=dict(arch=dict(depth=4, hidden_size=128, num_heads=4),
                   patch_size=4),
        pretrain=dict(iters=1950, batch=32, lr=4e-3, ema=0.99),
        finetune=dict(iters=910, batch=32, lr=2e-2, ema=0.99),
        sample=dict(per_class=10, steps=8, batch=500, scale=1.5),
        workers=0,
        amp=False),
    'gpu':
    dict(
        images=dict(base=1000, fine=400, val=50),
        judge=dict(iters=500, batch=256),
        model=dict(arch='S', patch_size=4),
        pretrain=dict(iters=1200, batch=256, lr=1e-3, ema=0.995),
        finetune=dict(iters=500, batch=256, lr=1e-2, ema=0.99),
        sample=dict(per_class=10, steps=10, batch=2000, scale=2.0),
        # Loading in the main process: 12 worker processes delivered about
        # 1,100 img/s on the H100 machine (16 cores), the main process alone
        # about 3,800 (2026-11-26).
        workers=0,
        amp=True),
}

MODES = (('fine-grained CFG', 'fine_grained'), ('standard CFG', 'standard'),
         ('no guidance', 'none'))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--scale',
        choices=sorted(SCALES),
        help='stage sizes; defaults to gpu when CUDA is available')
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/synthetic')
    parser.add_argument(
        '--experiment',
        action='store_true',
        help='also sweep the guidance scale and compare PEFT, full '
        'fine-tuning and BitFit')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args()


class Stages:
    """The demo's stages on one scale, work dir and data root."""

    def __init__(self, scale: str, work_dir: str, data_root: str,
                 seed: int) -> None:
        self.name = scale
        self.s = SCALES[scale]
        self.work_dir = work_dir
        self.data_root = data_root
        self.seed = seed
        self.device = 'cuda' if torch.cuda.is_available() else 'cpu'
        # bf16 matrix units (AMX) train the DiT about 1.25x faster than
        # float32 on a CPU; without them bf16 is the slower one. On a GPU,
        # --amp does it.
        amx = getattr(torch.cpu, '_is_amx_tile_supported', lambda: False)
        self.autocast = ('bfloat16' if self.device == 'cpu' and amx() else
                         None)
        self.base = osp.join(data_root, 'base')
        self.fine = osp.join(data_root, 'fine')

    def data(self) -> None:
        images = self.s['images']
        write_synthetic_hierarchy(
            self.base, 'base', {'train': images['base']}, seed=self.seed,
            workers=min(8, os.cpu_count() or 1))
        write_synthetic_hierarchy(
            self.fine, 'fine', {'train': images['fine'],
                                'val': images['val']}, seed=self.seed + 1,
            workers=min(8, os.cpu_count() or 1))

    def train(self, stage: str, config: str, options: Dict) -> dict:
        """Runs tools/train.py once per (config, options); returns the last
        checkpoint and the measured training speed."""
        work_dir = osp.join(self.work_dir, stage)
        # At least a few logged windows, from which the speed is measured.
        options = {
            'default_hooks.logger.interval':
            max(1, min(50, options['train_cfg.max_iters'] // 4)),
            **options
        }
        # The resolved config, so that an edited config file retrains.
        text = _config(config, options).pretty_text
        stamp = dict(config=config, options=options, amp=self.s['amp'],
                     sha1=hashlib.sha1(text.encode()).hexdigest())
        done = osp.join(work_dir, 'done.json')
        if osp.exists(done):
            with open(done) as f:
                record = json.load(f)
            if record['stamp'] == stamp:
                print(f'[{stage}] reusing {record["checkpoint"]}')
                return record
        args = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), config,
                '--work-dir', work_dir]
        if self.s['amp'] and self.device == 'cuda':
            args.append('--amp')
        args += ['--cfg-options'] + [f'{k}={_cli(v)}' for k, v in
                                     options.items()]
        os.makedirs(work_dir, exist_ok=True)
        log = osp.join(work_dir, 'train.log')
        print(f'[{stage}] training: {config} (log: {log})', flush=True)
        start = time.time()
        with open(log, 'w') as f:
            code = subprocess.call(args, stdout=f, stderr=subprocess.STDOUT)
        if code:
            with open(log) as f:
                tail = ''.join(f.readlines()[-30:])
            raise SystemExit(f'[{stage}] tools/train.py failed ({code}); '
                             f'end of {log}:\n{tail}')
        iters = options['train_cfg.max_iters']
        record = dict(
            stamp=stamp,
            checkpoint=osp.join(work_dir, f'iter_{iters}.pth'),
            seconds=round(time.time() - start, 1),
            img_per_s=_train_speed(work_dir,
                                   options['train_dataloader.batch_size']))
        with open(done, 'w') as f:
            json.dump(record, f)
        print(f'[{stage}] {record["seconds"]} s, '
              f'{record["img_per_s"]:.0f} img/s', flush=True)
        return record

    def data_options(self, root: str, batch: int) -> Dict:
        return {
            'train_dataloader.dataset.data_root': root,
            'train_dataloader.batch_size': batch,
            'train_dataloader.num_workers': self.s['workers'],
            'train_dataloader.persistent_workers': self.s['workers'] > 0,
        }

    def judge(self) -> dict:
        j = self.s['judge']
        options = {
            **self.data_options(osp.join(self.fine, 'train'), j['batch']),
            'val_dataloader.dataset.data_root': osp.join(self.fine, 'val'),
            'train_cfg.max_iters': j['iters'],
            'train_cfg.val_interval': j['iters'],
            # Warm-up over the first fifth, then the cosine decay.
            'param_scheduler.0.end': max(1, j['iters'] // 5),
            'param_scheduler.1.begin': max(1, j['iters'] // 5),
            'param_scheduler.1.end': j['iters'],
        }
        return self.train('judge', JUDGE_CONFIG, options)

    def model_options(self, stage: str, root: str) -> Dict:
        p = self.s[stage]
        arch = self.s['model']['arch']
        arch = ({f'model.backbone.arch.{k}': v for k, v in arch.items()}
                if isinstance(arch, dict) else {'model.backbone.arch': arch})
        options = {
            **self.data_options(root, p['batch']),
            **arch,
            'model.backbone.taxonomy.data_root': root,
            'model.backbone.patch_size': self.s['model']['patch_size'],
            'model.ema_decay': p['ema'],
            'model.autocast': self.autocast,
            'optim_wrapper.optimizer.lr': p['lr'],
            'train_cfg.max_iters': p['iters'],
        }
        return options

    def pretrain(self) -> Tuple[str, dict]:
        """The exported base model's path and the run's record."""
        record = self.train('pretrain', BASE_CONFIG, self.model_options(
            'pretrain', osp.join(self.base, 'train')))
        out = osp.join(self.work_dir, 'pretrain', 'base_dit.pth')
        cfg = _config(BASE_CONFIG, record['stamp']['options'])
        export_base(cfg, record['checkpoint'], out)
        return out, record

    def finetune(self, base: str, trainable='finediffusion',
                 stage: str = 'finetune') -> dict:
        options = self.model_options('finetune',
                                     osp.join(self.fine, 'train'))
        options['model.backbone.pretrained'] = base
        options['model.trainable'] = trainable
        if trainable == 'full':
            # Every weight moves: the pretraining learning rate, not the
            # larger one that bias and norm tuning takes.
            options['optim_wrapper.optimizer.lr'] = self.s['pretrain']['lr']
        return self.train(stage, FINE_CONFIG, options)

    def load(self, record: dict):
        cfg = _config(FINE_CONFIG, record['stamp']['options'])
        return load_for_sampling(cfg, record['checkpoint'],
                                 device=self.device)

    @torch.no_grad()
    def sample(self, model, labels: torch.Tensor, mode: str,
               scale: float) -> torch.Tensor:
        """uint8 RGB samples; the same noise for every mode and scale."""
        p = self.s['sample']
        generator = torch.Generator(self.device).manual_seed(self.seed)
        guidance = FineGrainedCFG(mode, scale)
        out = []
        for batch in labels.to(self.device).split(p['batch']):
            images = model.sample(
                batch,
                num_sampling_steps=p['steps'],
                guidance=guidance,
                scheduler=dict(type='DPMSolverMultistepScheduler'),
                generator=generator)
            out.append(((images + 1) * 127.5).round().clamp(0, 255).byte()
                       .cpu())
        return torch.cat(out)


def _cli(value) -> str:
    """A value as MMEngine's --cfg-options parses it back."""
    if isinstance(value, (list, tuple)):
        return '[' + ','.join(_cli(v) for v in value) + ']'
    return str(value)


def _config(path: str, options: Dict) -> Config:
    return load_config(osp.join(ROOT, path), options)


def _train_speed(work_dir: str, batch: int) -> float:
    """Images per second from the Runner's logged iteration times (the
    first logged window, with start-up, left out)."""
    times = []
    for path in sorted(_find(work_dir, 'scalars.json')):
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                if 'time' in record and 'loss' in record:
                    times.append(record['time'])
    times = times[1:] or times
    return batch / float(np.mean(times)) if times else float('nan')


def _find(root: str, name: str) -> List[str]:
    return [osp.join(d, name) for d, _, files in os.walk(root)
            if name in files]


def real_images(root: str) -> Dict[str, torch.Tensor]:
    """The held-out real images (uint8 RGB) and their subclass ids."""
    from PIL import Image

    from finediffusion.datasets.hierarchy import read_hierarchy
    taxonomy, samples = read_hierarchy(root)
    images = np.stack(
        [np.array(Image.open(osp.join(root, path))) for path, _ in samples])
    return dict(
        images=torch.from_numpy(images).permute(0, 3, 1, 2),
        labels=torch.tensor([label for _, label in samples]),
        taxonomy=taxonomy)


def judged(judge: Judge, images: torch.Tensor, labels: torch.Tensor,
           sub2super, real_spread: float, with_hits: bool = False) -> dict:
    """The judge's verdict on samples of ``labels``; ``with_hits`` adds
    ``hits``, the per-sample subclass hits (bool array, not JSON)."""
    verdict = judge(images)
    spread = intra_class_spread(verdict['features'], labels)
    acc = accuracy(verdict['pred'], labels, sub2super)
    if with_hits:
        acc['hits'] = (verdict['pred'] == labels).numpy()
    # Of the samples of the right superclass, the share of the right
    # subclass: the fine detail alone, which fine-grained CFG amplifies.
    within = (acc['subclass_top1'] / acc['superclass_top1']
              if acc['superclass_top1'] else 0.)
    return dict(**acc, within_superclass=within,
                diversity=spread / real_spread)


def paired_difference(hits_a: np.ndarray, hits_b: np.ndarray,
                      labels: torch.Tensor, resamples: int = 10000,
                      seed: int = 0) -> dict:
    """Subclass top-1 of a minus b on the same noise and labels, with a
    95% interval from resampling whole classes (the samples of one class
    share its difficulty, so they are not independent draws)."""
    labels = labels.numpy()
    per_class = np.array([(hits_a[labels == c].astype(float) -
                           hits_b[labels == c]).mean()
                          for c in np.unique(labels)])
    rng = np.random.default_rng(seed)
    boot = per_class[rng.integers(0, len(per_class),
                                  (resamples, len(per_class)))].mean(1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return dict(difference=float(per_class.mean()),
                interval95=[float(low), float(high)])


def print_table(title: str, header: List[str], rows: List[List]) -> str:
    lines = [f'| {" | ".join(header)} |',
             '|' + '|'.join(' --- ' for _ in header) + '|']
    lines += [f'| {" | ".join(str(c) for c in row)} |' for row in rows]
    text = '\n'.join(lines)
    print(f'\n{title}\n{text}\n', flush=True)
    return text


def main() -> None:
    args = parse_args()
    scale = args.scale or ('gpu' if torch.cuda.is_available() else 'cpu')
    stages = Stages(scale, args.work_dir, args.data_root, args.seed)
    os.chdir(ROOT)
    start = time.time()
    print(f'FineDiffusion demo, scale {scale!r}, device {stages.device}, '
          f'{torch.get_num_threads()} CPU threads', flush=True)

    stages.data()
    print(f'[data] {time.time() - start:.0f} s', flush=True)
    judge_run = stages.judge()
    judge = Judge(JUDGE_CONFIG, judge_run['checkpoint'], stages.device)
    real = real_images(osp.join(stages.fine, 'val'))
    taxonomy = real['taxonomy']
    real_verdict = judge(real['images'])
    real_spread = intra_class_spread(real_verdict['features'],
                                     real['labels'])
    judge_acc = accuracy(real_verdict['pred'], real['labels'],
                         taxonomy.sub2super)
    print(f'[judge] held-out real images: subclass top-1 '
          f'{judge_acc["subclass_top1"]:.1%}, superclass top-1 '
          f'{judge_acc["superclass_top1"]:.1%}', flush=True)

    base, pretrain = stages.pretrain()
    peft = stages.finetune(base)
    model, _ = stages.load(peft)
    trainable, total = trainable_count(model.backbone)

    p = stages.s['sample']
    labels = torch.arange(len(taxonomy.names)).repeat_interleave(
        p['per_class'])
    results, grid_columns = [], {}
    # Rows of the grid: every subclass of the first two superclasses.
    rows = [c for c, s in enumerate(taxonomy.sub2super) if s < 2]
    per_row = min(4, p['per_class'])
    pick = torch.tensor([c * p['per_class'] + k for c in rows
                         for k in range(per_row)])
    real_pick = torch.cat([
        (real['labels'] == c).nonzero().flatten()[:per_row] for c in rows])
    grid_columns['real'] = real['images'][real_pick]
    hits = {}
    for title, mode in MODES:
        tick = time.time()
        scale_value = 1.0 if mode == 'none' else p['scale']
        images = stages.sample(model, labels, mode, scale_value)
        seconds = time.time() - tick
        verdict = judged(judge, images, labels, taxonomy.sub2super,
                         real_spread, with_hits=True)
        hits[mode] = verdict.pop('hits')
        results.append(
            dict(mode=mode, scale=scale_value,
                 sample_img_per_s=len(labels) / seconds, **verdict))
        grid_columns[title] = images[pick]
        print(f'[sample] {title}: {len(labels)} images in {seconds:.0f} s',
              flush=True)

    grid = class_grid(
        {k: v.reshape(len(rows), per_row, *v.shape[1:]).permute(
            0, 1, 3, 4, 2).numpy() for k, v in grid_columns.items()},
        rows, taxonomy)
    grid_path = osp.join(args.work_dir, 'samples.png')
    grid.save(grid_path)

    chance = 1 / len(taxonomy.names)
    rows_out = [[
        r['mode'], r['scale'], f'{100 * trainable / total:.2f}%',
        f'{peft["img_per_s"]:.0f}', f'{r["subclass_top1"]:.1%}',
        f'{r["superclass_top1"]:.1%}', f'{r["within_superclass"]:.1%}',
        f'{r["diversity"]:.2f}'
    ] for r in results]
    table = print_table(
        f'FineDiffusion on the synthetic fine-grained taxonomy '
        f'({len(taxonomy.names)} subclasses, {len(taxonomy.super_names)} '
        f'superclasses; chance {chance:.1%}); judge on held-out real '
        f'images: {judge_acc["subclass_top1"]:.1%} subclass top-1',
        ['guidance', 'scale', 'trainable', 'train img/s', 'subclass top-1',
         'superclass top-1', 'within-superclass top-1',
         'diversity (real = 1)'], rows_out)
    # Same noise and labels in every mode: the differences are paired.
    gains = {}
    for title, mode in MODES:
        if mode == 'none':
            continue
        gain = paired_difference(hits[mode], hits['none'], labels)
        gains[f'{mode}_vs_none'] = gain
        low, high = gain['interval95']
        print(f'{title} minus no guidance, subclass top-1: '
              f'{100 * gain["difference"]:+.1f} points (95% interval over '
              f'classes {100 * low:+.1f} to {100 * high:+.1f})', flush=True)

    metrics = dict(
        scale=scale,
        device=stages.device,
        judge_real=judge_acc,
        chance=chance,
        trainable_params=trainable,
        backbone_params=total,
        trainable_percent=100 * trainable / total,
        pretrain=dict(seconds=pretrain['seconds'],
                      img_per_s=pretrain['img_per_s']),
        finetune=dict(seconds=peft['seconds'], img_per_s=peft['img_per_s']),
        guidance=results,
        gains=gains,
        grid=grid_path)

    if args.experiment:
        metrics['experiment'] = experiment(stages, base, model, judge,
                                           labels, taxonomy, real_spread)
    metrics['total_seconds'] = round(time.time() - start, 1)
    metrics['table'] = table
    with open(osp.join(args.work_dir, 'metrics.json'), 'w') as f:
        json.dump(metrics, f, indent=2)
    print(f'Grid: {grid_path}\nMetrics: '
          f'{osp.join(args.work_dir, "metrics.json")}\n'
          f'Total: {metrics["total_seconds"]:.0f} s')


def experiment(stages: Stages, base: str, model, judge: Judge,
               labels: torch.Tensor, taxonomy, real_spread: float) -> dict:
    """The paper's two claims on this benchmark."""
    sweep = []
    for scale in (1., 2., 3., 4., 5., 6.):
        for mode in ('fine_grained', 'standard'):
            images = stages.sample(model, labels, mode, scale)
            sweep.append(dict(mode=mode, scale=scale,
                              **judged(judge, images, labels,
                                       taxonomy.sub2super, real_spread)))
    print_table('Guidance scale sweep (same model, noise and steps)',
                ['scale', 'fine-grained sub', 'fine-grained super',
                 'fine-grained div', 'standard sub', 'standard super',
                 'standard div'],
                [[a['scale'], f'{a["subclass_top1"]:.1%}',
                  f'{a["superclass_top1"]:.1%}', f'{a["diversity"]:.2f}',
                  f'{b["subclass_top1"]:.1%}', f'{b["superclass_top1"]:.1%}',
                  f'{b["diversity"]:.2f}']
                 for a, b in zip(sweep[::2], sweep[1::2])])

    methods = []
    # BitFit trains biases only; a new taxonomy also needs its class table,
    # so it trains here too (as in the paper's baseline).
    for name, trainable in (('FineDiffusion PEFT', 'finediffusion'),
                            ('full fine-tuning', 'full'),
                            ('BitFit (+ class table)',
                             ['y_embedder.*', '*.bias'])):
        stage = 'finetune' if trainable == 'finediffusion' else (
            'finetune_' + name.split()[0].lower())
        record = stages.finetune(base, trainable, stage)
        tuned, _ = stages.load(record)
        count, total = trainable_count(tuned.backbone)
        images = stages.sample(tuned, labels, 'fine_grained',
                               stages.s['sample']['scale'])
        methods.append(dict(
            method=name, trainable_percent=100 * count / total,
            seconds=record['seconds'], img_per_s=record['img_per_s'],
            **judged(judge, images, labels, taxonomy.sub2super,
                     real_spread)))
    print_table('PEFT vs full fine-tuning vs BitFit (fine-grained CFG)',
                ['method', 'trainable', 'train img/s', 'train s',
                 'subclass top-1', 'superclass top-1', 'diversity'],
                [[m['method'], f'{m["trainable_percent"]:.2f}%',
                  f'{m["img_per_s"]:.0f}', m['seconds'],
                  f'{m["subclass_top1"]:.1%}', f'{m["superclass_top1"]:.1%}',
                  f'{m["diversity"]:.2f}'] for m in methods])
    return dict(guidance_sweep=sweep, methods=methods)


if __name__ == '__main__':
    main()
