"""The main job on a built-in default: FineDiffusion on a synthetic
fine-grained taxonomy, end to end, with a measured result.

A scale's recipe is its fine-tuning config (``SCALES``), whose ``demo``
section names the judge's and pretraining's configs and holds the rest; the
run passes only its folders, seed, checkpoints and precision. Stages (each
skipped when done with the same settings): image sets, judge, base TieredDiT
(exported in DiT's layout), PEFT fine-tuning, guided samples, judged.

    python tools/demo.py                 # 2 CPU cores: about 9 minutes
    python tools/demo.py --scale gpu --experiment  # + scale sweep, baselines
    python tools/demo.py --scale gpu --ranks  # species, genus, family
"""
import argparse
import hashlib
import json
import os
import os.path as osp
import sys
import time
from typing import Dict, Optional, Tuple

import torch

import finediffusion  # noqa: F401,I001  (compatibility fixes first)
from finediffusion.cli import cfg_options
from finediffusion.config import load_config
from finediffusion.datasets.synthetic import write_synthetic_hierarchy
from finediffusion.evaluation import guidance_comparison as guidance, report
from finediffusion.evaluation import rank_benchmark as ranks
from finediffusion.evaluation.judge import Judge, SampleJudge
from finediffusion.inference import export_base, load_for_sampling
from finediffusion.models import FineDiffusion
from finediffusion.models.peft import trainable_count
from finediffusion.new_species import INITS
from finediffusion.taxonomy import Taxonomy
from finediffusion.tool_runs import ToolFailed, run_logged, train_speed
from finediffusion.visualization import sample_grid

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SCALES = {'cpu': 'configs/finediffusion_synthetic.py',
          'gpu': 'configs/synthetic/gpu/finetune.py'}


def parse_args() -> argparse.Namespace:
    """The command line (scale, folders, seed, --experiment)."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--scale', choices=sorted(SCALES),
                        help='defaults to gpu when CUDA is available')
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/synthetic')
    parser.add_argument('--experiment', action='store_true', help='also '
                        'the guidance-scale sweep and PEFT against baselines')
    parser.add_argument('--ranks', action='store_true', help='only the '
                        'three-level benchmark (species, genus, family) on '
                        'the base model')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args()


def _config(path: str, options: Optional[Dict] = None):
    return load_config(osp.join(ROOT, path), options)


class Stages:
    """The demo's stages on one scale's fine-tuning config (and the configs
    it names), work dir and data root."""

    def __init__(self, config: str, work_dir: str, data_root: str,
                 seed: int) -> None:
        self.work_dir, self.seed = work_dir, seed
        self.demo = _config(config).demo
        self.configs = dict(judge=self.demo.judge,
                            pretrain=self.demo.pretrain, finetune=config)
        self.device = 'cuda' if torch.cuda.is_available() else 'cpu'
        self.amp = self.demo.amp and self.device == 'cuda'
        # bf16 matrix units (AMX) train the DiT about 1.25x faster than
        # float32 on a CPU; without them bf16 is the slower one.
        amx = getattr(torch.cpu, '_is_amx_tile_supported', lambda: False)
        self.precision = ({'model.autocast': 'bfloat16'}
                          if self.device == 'cpu' and amx() else {})
        self.base = osp.join(data_root, 'base')
        self.fine = osp.join(data_root, 'fine')
        self.ranked = osp.join(data_root, 'ranked')

    def data(self, fine: bool = True) -> None:
        """Writes the synthetic image sets (unless they are there): the
        base set, and the fine one unless ``fine`` is False."""
        n, workers = self.demo.images_per_class, min(8, os.cpu_count() or 1)
        write_synthetic_hierarchy(self.base, 'base', {'train': n.base},
                                  seed=self.seed, workers=workers)
        if fine:
            write_synthetic_hierarchy(self.fine, 'fine', {'train': n.fine,
                                                          'val': n.val},
                                      seed=self.seed + 1, workers=workers)

    def train(self, stage: str, config: str, options: Dict) -> dict:
        """Runs tools/train.py once per resolved config and options; returns
        the last checkpoint and the measured training speed."""
        work_dir = osp.join(self.work_dir, stage)
        done, log = (osp.join(work_dir, n) for n in ('done.json', 'train.log'))
        # The resolved config, so that an edited config file retrains.
        cfg = _config(config, options)
        stamp = dict(config=config, options=options, amp=self.amp,
                     sha1=hashlib.sha1(cfg.pretty_text.encode()).hexdigest())
        if osp.exists(done):
            with open(done) as f:
                record = json.load(f)
            if record['stamp'] == stamp:
                print(f'[{stage}] reusing {record["checkpoint"]}')
                return record
        print(f'[{stage}] training: {config} (log: {log})', flush=True)
        try:
            seconds = run_logged([
                sys.executable, osp.join(ROOT, 'tools', 'train.py'), config,
                '--work-dir', work_dir, *(['--amp'] if self.amp else []),
                '--cfg-options', *cfg_options(options)], log)
        except ToolFailed as error:
            raise SystemExit(f'[{stage}] {error}')
        iters, batch = cfg.train_cfg.max_iters, cfg.train_dataloader.batch_size
        record = dict(stamp=stamp, seconds=seconds,
                      checkpoint=osp.join(work_dir, f'iter_{iters}.pth'),
                      img_per_s=train_speed(work_dir, batch))
        with open(done, 'w') as f:
            json.dump(record, f)
        print(f'[{stage}] {seconds} s, {record["img_per_s"]:.0f} img/s',
              flush=True)
        return record

    def judge(self) -> SampleJudge:
        """The trained judge, with the held-out real images it scored."""
        record = self.train('judge', self.configs['judge'], {
            'train_dataloader.dataset.data_root': osp.join(self.fine, 'train'),
            'val_dataloader.dataset.data_root': osp.join(self.fine, 'val')})
        judge = Judge(self.configs['judge'], record['checkpoint'], self.device)
        return SampleJudge(judge, osp.join(self.fine, 'val'))

    def pretrain(self) -> Tuple[str, dict]:
        """The exported base model's path and the run's record."""
        config = self.configs['pretrain']
        record = self.train('pretrain', config, {
            'data_root': osp.join(self.base, 'train'), **self.precision})
        out = osp.join(self.work_dir, 'pretrain', 'base_dit.pth')
        export_base(_config(config, record['stamp']['options']),
                    record['checkpoint'], out)
        return out, record

    def finetune(self, base: str, method: Optional[str] = None) -> dict:
        """Fine-tunes ``base`` by the config, or by one of its
        ``demo.experiment.methods`` (the config with other options)."""
        options = {'data_root': osp.join(self.fine, 'train'), **self.precision,
                   'model.backbone.pretrained': base}
        spec = self.demo.experiment.methods[method] if method else {}
        changes = dict(spec.get('options', {}))
        return self.train(f'finetune_{method}' if changes else 'finetune',
                          self.configs['finetune'], {**options, **changes})

    def load(self, record: dict) -> FineDiffusion:
        """The fine-tuned FineDiffusion of a finetune stage's record."""
        return self.loaded(record)[0]

    def loaded(self, record: dict) -> Tuple[FineDiffusion, Taxonomy]:
        """The fine-tuned FineDiffusion of a finetune stage's record, and
        its taxonomy."""
        cfg = _config(self.configs['finetune'], record['stamp']['options'])
        return load_for_sampling(cfg, record['checkpoint'],
                                 device=self.device)

    def sampler(self, model: FineDiffusion,
                labels: torch.Tensor) -> guidance.Sampler:
        """Samples of ``labels`` by mode and scale, the same noise in each."""
        return guidance.model_sampler(model, labels, self.seed,
                                      self.demo.sample_batch, self.device)


def compare_guidance(stages: Stages, model: FineDiffusion, judge: SampleJudge,
                     labels: torch.Tensor) -> Tuple[list, dict]:
    """``labels`` sampled and judged in each guidance mode, and the grid
    PNG; the verdicts and the paired gains over no guidance."""
    results, images, gains = guidance.compare_modes(
        stages.sampler(model, labels), judge, labels, model.guidance.scale,
        lambda title, seconds: print(f'[sample] {title}: {len(labels)} '
                                     f'images in {seconds:.0f} s', flush=True))
    shown = {title: (im, labels) for title, im in images.items()}
    grid = sample_grid(dict(real=(judge.images, judge.labels), **shown),
                       judge.taxonomy,
                       per_class=min(4, stages.demo.samples_per_class))
    grid.save(osp.join(stages.work_dir, 'samples.png'))
    return results, gains


def experiment(stages: Stages, base: str, model: FineDiffusion,
               judge: SampleJudge, labels: torch.Tensor) -> dict:
    """The paper's two claims on this benchmark."""
    plan = stages.demo.experiment
    sweep = guidance.sweep_scales(stages.sampler(model, labels), judge,
                                  labels, plan.guidance_scales)
    report.print_table('Guidance scale sweep (same model, noise and steps)',
                       report.sweep_table(sweep))
    methods = []
    for key, method in plan.methods.items():
        record = stages.finetune(base, key)
        tuned = stages.load(record)
        count, total = trainable_count(tuned.backbone)
        images = stages.sampler(tuned, labels)('fine_grained',
                                               tuned.guidance.scale)
        methods.append(dict(
            method=method.title, trainable_percent=100 * count / total,
            seconds=record['seconds'], img_per_s=record['img_per_s'],
            **judge(images, labels)))
    report.print_table(
        'PEFT vs full fine-tuning vs BitFit (fine-grained CFG)',
        report.methods_table(methods))
    return dict(guidance_sweep=sweep, methods=methods)


def ranked_judge(stages: Stages, folders: Dict[str, str]) -> SampleJudge:
    """The judge of the ranked set (all its species), and its held-out
    real images with genus and family."""
    record = stages.train('ranks_judge', stages.configs['judge'], {
        'num_classes': len(ranks.read_names(folders['train'])),
        'train_dataloader.dataset.data_root': folders['train'],
        'train_dataloader.dataset.ann_file': 'annotations.csv',
        'val_dataloader.dataset.data_root': folders['val'],
        'val_dataloader.dataset.ann_file': 'annotations.csv'})
    judge = Judge(stages.configs['judge'], record['checkpoint'],
                  stages.device)
    return SampleJudge(judge, folders['val'], ranks.RANKS)


def tiers_options(stages: Stages, base: str, train_root: str, known: str,
                  tiers: int) -> Dict:
    """The fine-tuning options of the known species in two tiers
    (species, family) or three (species, genus, family)."""
    options = {'data_root': train_root, 'taxonomy.ann_file': known,
               'model.backbone.pretrained': base, **stages.precision}
    if tiers == 3:
        options['taxonomy.ranks'] = list(ranks.RANKS)
    return options


def add_species(stages: Stages, record: dict, options: Dict,
                train_root: str, new: str, init: str) -> str:
    """tools/add_species.py on a three-tier run (reused when done); the
    work dir, with its add_species.py config and delta."""
    work_dir = osp.join(stages.work_dir, f'ranks_new_{init}')
    if osp.isfile(osp.join(work_dir, 'delta.safetensors')):
        print(f'[new species, {init} start] reusing {work_dir}')
        return work_dir
    plan = stages.demo.ranks
    try:
        seconds = run_logged([
            sys.executable, osp.join(ROOT, 'tools', 'add_species.py'),
            stages.configs['finetune'], record['checkpoint'], '--data',
            train_root, '--ann-file', new, '--work-dir', work_dir,
            '--init', init, '--iters', str(plan.new_species_iters),
            '--seed', str(stages.seed), '--cfg-options',
            *cfg_options(options)], work_dir + '.log')
    except ToolFailed as error:
        raise SystemExit(f'[new species] {error}')
    print(f'[new species, {init} start] {seconds} s', flush=True)
    return work_dir


def ranks_experiment(stages: Stages, base: str) -> dict:
    """Two against three tiers, guidance from each rank, and new species
    from a few images by their start (the README's three tables)."""
    plan = stages.demo.ranks
    folders = write_synthetic_hierarchy(
        stages.ranked, 'ranked', dict(plan.images_per_class),
        seed=stages.seed + 2, workers=min(8, os.cpu_count() or 1))
    split = ranks.split_species(folders['train'],
                                osp.join(stages.work_dir, 'ranks'),
                                plan.held_out_every, plan.shots)
    judge = ranked_judge(stages, folders)
    print(f'[judge] ranked held-out real images: species top-1 '
          f'{judge.accuracy["subclass_top1"]:.1%}', flush=True)
    draw = ranks.Draw(stages.seed, stages.demo.sample_batch, stages.device,
                      stages.demo.samples_per_class)
    scale = _config(stages.configs['finetune']).model.guidance.scale
    rows, runs = [], {}
    for tiers in (2, 3):
        options = tiers_options(stages, base, folders['train'],
                                split['known'], tiers)
        record = stages.train(f'ranks_{tiers}_tiers',
                              stages.configs['finetune'], options)
        model, taxonomy = stages.loaded(record)
        runs[tiers] = (model, taxonomy, record, options)
        rows += ranks.tiers_rows(draw, model, taxonomy, tiers, judge, scale)
    tables = [report.print_table('Two tiers against three, same budget',
                                 ranks.level_table('training, guidance',
                                                   rows))]
    model, taxonomy, record, options = runs[3]
    tables.append(report.print_table(
        'Guidance from each rank (three-tier model)',
        ranks.level_table('guidance', ranks.guidance_rows(
            draw, model, taxonomy, judge, scale,
            plan.hierarchical_scales))))
    new_rows, identical = [], {}
    for init in INITS:
        work_dir = add_species(stages, record, options, folders['train'],
                               split['new'], init)
        grown, grown_taxonomy = load_for_sampling(
            osp.join(work_dir, 'add_species.py'),
            osp.join(work_dir, 'delta.safetensors'), device=stages.device)
        identical[init] = ranks.same_samples(draw, model, grown, range(8))
        new_rows += ranks.new_species_rows(draw, grown, grown_taxonomy,
                                           len(taxonomy.names), init, judge,
                                           scale)
    tables.append(report.print_table(
        f'New species from {plan.shots} images each, '
        f'{plan.new_species_iters} steps, by start (existing species '
        f'sample identically: {identical})',
        ranks.level_table('start, guidance', new_rows)))
    return dict(tables=tables, judge_real=judge.accuracy,
                held_out=split['held_out'], existing_identical=identical)


def ranks_main(stages: Stages, scale: str, work_dir: str,
               start: float) -> None:
    """``--ranks``: the base model and the three-level benchmark, its
    tables printed and written to ranks_metrics.json."""
    base, _ = stages.pretrain()
    metrics = dict(scale=scale, device=stages.device,
                   ranks=ranks_experiment(stages, base),
                   total_seconds=round(time.time() - start, 1))
    path = osp.join(work_dir, 'ranks_metrics.json')
    with open(path, 'w') as f:
        json.dump(metrics, f, indent=2)
    print(f'Metrics: {path}\nTotal: {metrics["total_seconds"]:.0f} s')


def main() -> None:
    """Runs (or reuses) every stage and writes the grid and metrics."""
    args = parse_args()
    scale = args.scale or ('gpu' if torch.cuda.is_available() else 'cpu')
    stages = Stages(SCALES[scale], args.work_dir, args.data_root, args.seed)
    os.chdir(ROOT)
    start = time.time()
    print(f'FineDiffusion demo, scale {scale!r}, device {stages.device}, '
          f'{torch.get_num_threads()} CPU threads', flush=True)
    stages.data(fine=not args.ranks)
    print(f'[data] {time.time() - start:.0f} s', flush=True)
    if args.ranks:
        return ranks_main(stages, scale, args.work_dir, start)
    judge = stages.judge()
    print(f'[judge] held-out real images: subclass top-1 '
          f'{judge.accuracy["subclass_top1"]:.1%}, superclass top-1 '
          f'{judge.accuracy["superclass_top1"]:.1%}', flush=True)
    base, pretrain = stages.pretrain()
    peft = stages.finetune(base)
    model = stages.load(peft)
    trainable, total = trainable_count(model.backbone)
    labels = torch.arange(len(judge.taxonomy.names)).repeat_interleave(
        stages.demo.samples_per_class)
    results, gains = compare_guidance(stages, model, judge, labels)
    table = report.print_table(
        report.guidance_title(judge.taxonomy, judge.accuracy['subclass_top1']),
        report.guidance_table(results, 100 * trainable / total,
                              peft['img_per_s']))
    print('\n'.join(guidance.gain_lines(gains)), flush=True)
    metrics = dict(
        scale=scale, device=stages.device, judge_real=judge.accuracy,
        chance=1 / len(judge.taxonomy.names), trainable_params=trainable,
        backbone_params=total, trainable_percent=100 * trainable / total,
        pretrain={k: pretrain[k] for k in ('seconds', 'img_per_s')},
        finetune={k: peft[k] for k in ('seconds', 'img_per_s')},
        guidance=results, gains=gains,
        grid=osp.join(args.work_dir, 'samples.png'))
    if args.experiment:
        metrics['experiment'] = experiment(stages, base, model, judge, labels)
    metrics.update(total_seconds=round(time.time() - start, 1), table=table)
    path = osp.join(args.work_dir, 'metrics.json')
    with open(path, 'w') as f:
        json.dump(metrics, f, indent=2)
    print(f'Grid: {metrics["grid"]}\nMetrics: {path}\n'
          f'Total: {metrics["total_seconds"]:.0f} s')


if __name__ == '__main__':
    main()
