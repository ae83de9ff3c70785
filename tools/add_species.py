"""Adds species to a trained FineDiffusion from a few images each.

The new species come as HierarchyDataset data with the model's ranks:
folders coarse to fine (ROOT/<family>/<genus>/<species>/*.jpg for ranks
genus, family; ROOT/<superclass>/<species>/ for two tiers) or --ann-file, a
CSV with path, subclass and a column per rank. A species the model has is
refused. Every existing id is kept; a new row starts at its nearest
existing ancestor's row (--init), and by default only the new rows train
(the other trainable tensors keep their values exactly, so existing
species sample bit-identically). Writes into the new --work-dir:
taxonomy.json and annotations.csv (the grown taxonomy, the new images),
start.pth (the grown model, in the PEFT checkpoint format), add_species.py
(the training config), the training run of tools/train.py, and
delta.safetensors (the old delta plus the new rows). With --prepare-only it
stops before training and prints the tools/dist_train.sh command.

Example:
    python tools/add_species.py configs/finediffusion_inat_ranks.py \\
        delta.safetensors --data new_species/ --work-dir work_dirs/new --iters 300
"""
import argparse
import csv
import json
import os
import os.path as osp
import subprocess
import sys
from typing import List, Optional, Tuple

import torch

import finediffusion  # noqa: F401,I001  (compatibility fixes first)
from mmengine.config import DictAction
from finediffusion.cli import positive_int
from finediffusion.config import load_config
from finediffusion.datasets.hierarchy import read_hierarchy
from finediffusion.delta import TAXONOMY_KEY, export_delta
from finediffusion.inference import build_model, load_for_sampling
from finediffusion.models.ema import ema_key
from finediffusion.models.tiered_dit import CLASS_TABLE
from finediffusion.new_species import (INITS, grow_class_table,
                                       grow_taxonomy)
from finediffusion.taxonomy import Taxonomy

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='the training config of the weights')
    parser.add_argument('weights', help='a delta (.safetensors) or a '
                        'training checkpoint (.pth)')
    parser.add_argument('--data', required=True,
                        help='the new species: folders, or the root the '
                        '--ann-file paths are relative to')
    parser.add_argument('--ann-file', help='a CSV or JSON annotation file')
    parser.add_argument('--work-dir', required=True,
                        help='a new or empty folder for every output')
    parser.add_argument('--init', default='ancestor', choices=INITS,
                        help='where new rows start (default: the nearest '
                        'existing ancestor)')
    parser.add_argument('--train-all', action='store_true',
                        help="train the config's whole trainable set, not "
                        'only the new rows (existing species change)')
    parser.add_argument('--iters', type=positive_int, default=300)
    parser.add_argument('--lr', type=float, help="default: the config's")
    parser.add_argument('--batch-size', type=positive_int,
                        help="default: the config's")
    parser.add_argument('--ema-decay', type=float, default=0.99,
                        help='EMA decay of the run (default 0.99, for a few '
                        "hundred steps; the config's is for long runs)")
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--base', help='official DiT checkpoint (default: '
                        "the config's model.backbone.pretrained)")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override entries of the config, as '
                        'tools/train.py takes them')
    parser.add_argument('--prepare-only', action='store_true',
                        help='write the start checkpoint and the config, '
                        'do not train')
    return parser.parse_args()


def new_species(args: argparse.Namespace, old: Taxonomy
                ) -> Tuple[Taxonomy, List[tuple]]:
    """The grown taxonomy and the new images as (path, species, lineage).

    Raises:
        SystemExit: For unreadable data, or species the model has.
    """
    ann = osp.join(args.data, args.ann_file) if args.ann_file else None
    try:
        found, samples = read_hierarchy(args.data, ann, tuple(old.ranks))
        lineages = [found.lineage(s) for s in range(len(found.names))]
        grown = grow_taxonomy(old, found.names, lineages)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f'error: {error}')
    rows = [(path, found.names[sub], lineages[sub]) for path, sub in samples]
    return grown, rows


def training_config(args: argparse.Namespace, cfg, grown: Taxonomy,
                    new_rows: Optional[List[int]]):
    """The config that trains the grown model on the new images alone;
    only ``new_rows`` of the class table train unless ``--train-all``
    (None: not restricted yet)."""
    work = osp.abspath(args.work_dir)
    spec = dict(type='HierarchyDataset', data_root=osp.abspath(args.data),
                ann_file=osp.join(work, 'annotations.csv'),
                ranks=list(grown.ranks),
                taxonomy_file=osp.join(work, 'taxonomy.json'))
    cfg = cfg.copy()
    cfg.pop('copied_specs', None)
    cfg.model.backbone.taxonomy = spec
    cfg.model.backbone.num_classes = len(grown.names)
    if args.base:
        cfg.model.backbone.pretrained = args.base
    cfg.model.ema_decay = args.ema_decay
    pipeline = cfg.train_dataloader.dataset.pipeline
    cfg.train_dataloader.dataset = dict(spec, pipeline=pipeline)
    if args.batch_size:
        cfg.train_dataloader.batch_size = args.batch_size
    # The held-out data of the old taxonomy is not the grown one's.
    for key in ('val_dataloader', 'val_cfg', 'val_evaluator',
                'test_dataloader', 'test_cfg', 'test_evaluator'):
        cfg[key] = None
    cfg.train_cfg = dict(type=cfg.train_cfg.get('type', 'IterBasedTrainLoop'),
                         max_iters=args.iters)
    cfg.default_hooks.checkpoint = dict(
        type='CheckpointHook', by_epoch=False, interval=args.iters,
        max_keep_ckpts=1)
    optimizer = cfg.optim_wrapper.optimizer
    if args.lr:
        optimizer.lr = args.lr
    if new_rows is not None and not args.train_all:
        cfg.model.train_only_rows = new_rows
        # Decay would move the tensors that must keep their values.
        optimizer.weight_decay = 0.
    cfg.load_from = osp.join(work, 'start.pth')
    cfg.resume = False
    cfg.work_dir = work
    cfg.randomness = dict(seed=args.seed)
    return cfg


def start_checkpoint(old_model, new_model, grown: Taxonomy, init: str,
                     seed: int) -> Tuple[dict, List[int]]:
    """The grown model's start in the PEFT checkpoint format (raw and EMA
    weights: the old model's EMA, which it samples with), and its new
    rows."""
    if old_model.ema is not None:
        with old_model.ema.swapped_in(old_model.backbone):
            state = {k: v.clone() for k, v in
                     old_model.backbone.state_dict().items()}
    else:
        state = old_model.backbone.state_dict()
    old_embedder = old_model.backbone.y_embedder
    table, new_rows = grow_class_table(
        state[CLASS_TABLE], old_embedder, new_model.backbone.y_embedder,
        grown, init, torch.Generator().manual_seed(seed))
    state[CLASS_TABLE] = table
    tensors = {}
    for name in new_model.trainable:
        tensors[f'backbone.{name}'] = state[name]
        if new_model.ema is not None:
            tensors[f'ema.{ema_key(name)}'] = state[name]
    tensors[TAXONOMY_KEY] = new_model.backbone.sub2super.clone()
    meta = dict(peft=dict(trainable=new_model.trainable,
                          ema=new_model.ema is not None),
                dataset_meta=dict(taxonomy=grown.to_dict(),
                                  classes=tuple(grown.names)))
    return dict(state_dict=tensors, meta=meta), new_rows


def write_inputs(work: str, grown: Taxonomy, rows: List[tuple]) -> None:
    """taxonomy.json and annotations.csv of the grown taxonomy."""
    with open(osp.join(work, 'taxonomy.json'), 'w') as f:
        json.dump(grown.to_dict(), f)
    columns = grown.ranks or ['superclass']
    with open(osp.join(work, 'annotations.csv'), 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['path', 'subclass', *columns])
        for path, name, lineage in rows:
            writer.writerow([path, name, *lineage])


def prepare(args: argparse.Namespace) -> str:
    """Writes the inputs, start.pth and add_species.py, all checked first;
    returns the config's path."""
    try:
        cfg = load_config(args.config, args.cfg_options)
        old_model, old = load_for_sampling(cfg, args.weights, args.base)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f'error: {error}')
    grown, rows = new_species(args, old)
    # Built from the grown taxonomy itself: nothing is written before every
    # check has passed.
    build_cfg = training_config(args, cfg, grown, None)
    build_cfg.model.backbone.taxonomy = grown
    new_model = build_model(build_cfg)
    try:
        checkpoint, new_rows = start_checkpoint(old_model, new_model, grown,
                                                args.init, args.seed)
    except ValueError as error:
        raise SystemExit(f'error: {error}')
    os.makedirs(args.work_dir, exist_ok=True)
    write_inputs(args.work_dir, grown, rows)
    torch.save(checkpoint, osp.join(args.work_dir, 'start.pth'))
    path = osp.join(args.work_dir, 'add_species.py')
    training_config(args, cfg, grown, new_rows).dump(path)
    ancestors = ', '.join(
        f'{len(grown.ancestor_names(k)) - len(old.ancestor_names(k))} {r}'
        for k, r in enumerate(old.ancestor_ranks))
    print(f'{len(grown.names) - len(old.names)} new species ({len(rows)} '
          f'images), new ancestors: {ancestors}; {len(new_rows)} new rows '
          f'start at {args.init} rows; ' +
          ('every trainable tensor trains' if args.train_all else
           'only they train'))
    return path


def main() -> None:
    """Prepares the grown model, trains its new rows and exports the
    delta; a non-empty work dir is refused before anything is read."""
    args = parse_args()
    if osp.isdir(args.work_dir) and os.listdir(args.work_dir):
        raise SystemExit(f'error: --work-dir {args.work_dir} already holds '
                         'files; give a new or empty folder (nothing there '
                         'is overwritten)')
    config = prepare(args)
    delta = osp.join(args.work_dir, 'delta.safetensors')
    checkpoint = osp.join(args.work_dir, f'iter_{args.iters}.pth')
    if args.prepare_only:
        print(f'train: tools/dist_train.sh {config} GPUS; then: python '
              f'tools/export_delta.py {checkpoint} {delta}')
        return
    run = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'train.py'), config])
    if run.returncode:
        raise SystemExit(f'error: training failed (exit status '
                         f'{run.returncode}); its inputs stay in '
                         f'{args.work_dir}')
    export_delta(checkpoint, delta)
    print(f'wrote {delta}; sample: python tools/sample.py {config} {delta} '
          '--classes NAME')


if __name__ == '__main__':
    main()
