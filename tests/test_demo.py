"""The main job (tools/demo.py) end to end at a size where nothing learns:
every stage runs through the real Runner, and a rerun reuses them."""
import json
import os.path as osp
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, load_tool
from finediffusion.evaluation.statistics import paired_difference

# The CPU scale's configs at a size where nothing learns (one logged window
# per iteration, so that the training speed is measured).
SMOKE_MODEL = ('model = dict(backbone=dict(arch=dict(depth=1, hidden_size=32, '
               'num_heads=2), patch_size=8), ema_decay=0.9{extra})\n'
               'train_dataloader = dict(batch_size=8)\n'
               'train_cfg = dict(max_iters=3)\n'
               'optim_wrapper = dict(optimizer=dict(lr=1e-3))\n'
               'default_hooks = dict(logger=dict(interval=1))\n')
SMOKE = dict(
    judge="""
train_dataloader = dict(batch_size=16)
train_cfg = dict(max_iters=3, val_interval=3)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.03, by_epoch=False, begin=0, end=1),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=1, end=3,
         eta_min=1e-5),
]
default_hooks = dict(logger=dict(interval=1))
""",
    pretrain=SMOKE_MODEL.format(extra=''),
    finetune=SMOKE_MODEL.format(
        extra=', num_sampling_steps=2, guidance=dict(scale=4.0)') + """
demo = dict(
    judge={judge!r},
    pretrain={pretrain!r},
    images_per_class=dict(base=2, fine=2, val=2),
    samples_per_class=2,
    sample_batch=100,
    ranks=dict(images_per_class=dict(train=2, val=2), shots=1,
               new_species_iters=2, hierarchical_scales=[[1., 2., 2.]]),
    experiment=dict(methods=dict(
        full=dict(options={{'optim_wrapper.optimizer.lr': 1e-3}}))))
""")
BASES = dict(judge='configs/synthetic/judge.py',
             pretrain='configs/synthetic/pretrain_base.py',
             finetune='configs/finediffusion_synthetic.py')


def smoke_configs(folder) -> str:
    """The smoke configs in ``folder``; the fine-tuning one's path."""
    paths = {stage: str(folder / f'{stage}.py') for stage in SMOKE}
    for stage, text in SMOKE.items():
        with open(paths[stage], 'w') as f:
            f.write(f'_base_ = [{osp.join(REPO, BASES[stage])!r}]\n' +
                    text.format(**paths))
    return paths['finetune']


def test_demo_runs_every_stage_and_reuses_them(tmp_path, monkeypatch,
                                               capsys):
    demo = load_tool('demo')
    monkeypatch.setitem(demo.SCALES, 'cpu', smoke_configs(tmp_path))
    work_dir, data_root = str(tmp_path / 'work'), str(tmp_path / 'data')
    argv = ['demo.py', '--scale', 'cpu', '--work-dir', work_dir,
            '--data-root', data_root]
    monkeypatch.setattr(sys, 'argv', argv + ['--experiment'])
    demo.main()
    with open(osp.join(work_dir, 'metrics.json')) as f:
        metrics = json.load(f)
    assert [r['mode'] for r in metrics['guidance']] == [
        'fine_grained', 'standard', 'none']
    for result in metrics['guidance']:
        assert 0 <= result['subclass_top1'] <= result['superclass_top1'] <= 1
    assert metrics['chance'] == 0.01
    for gain in metrics['gains'].values():
        low, high = gain['interval95']
        assert -1 <= low <= gain['difference'] <= high <= 1
    assert 0 < metrics['trainable_percent'] < 100
    assert metrics['finetune']['img_per_s'] > 0
    experiment = metrics['experiment']
    assert len(experiment['guidance_sweep']) == 12
    shares = {m['method']: m['trainable_percent']
              for m in experiment['methods']}
    assert (shares['BitFit (+ class table)'] < shares['FineDiffusion PEFT']
            < shares['full fine-tuning'])
    # 20 rows: the subclasses of two superclasses, 64 px each.
    assert Image.open(metrics['grid']).size[1] == 16 + 20 * 64
    out = capsys.readouterr().out
    assert 'subclass top-1' in out

    monkeypatch.setattr(sys, 'argv', argv)
    demo.main()
    out = capsys.readouterr().out
    for stage in ('judge', 'pretrain', 'finetune'):
        assert f'[{stage}] reusing' in out


def test_demo_ranks_benchmark_runs_every_table(tmp_path, monkeypatch,
                                              capsys):
    demo = load_tool('demo')
    monkeypatch.setitem(demo.SCALES, 'cpu', smoke_configs(tmp_path))
    work_dir = str(tmp_path / 'work')
    monkeypatch.setattr(sys, 'argv', [
        'demo.py', '--scale', 'cpu', '--work-dir', work_dir, '--data-root',
        str(tmp_path / 'data'), '--ranks'])
    demo.main()
    with open(osp.join(work_dir, 'ranks_metrics.json')) as f:
        metrics = json.load(f)['ranks']
    assert len(metrics['held_out']) == 8
    # Adding species leaves the existing ones' samples bit-identical.
    assert metrics['existing_identical'] == dict(
        ancestor=True, null=True, random=True)
    two, guidance, new = metrics['tables']
    assert len(two.splitlines()) == 2 + 6
    assert len(guidance.splitlines()) == 2 + 5
    assert len(new.splitlines()) == 2 + 6
    assert 'genus top-1' in capsys.readouterr().out


def test_paired_difference_resamples_whole_classes():
    labels = torch.arange(4).repeat_interleave(3)
    same = np.array([True, False, True] * 4)
    gain = paired_difference(same, same, labels)
    assert gain == dict(difference=0., interval95=[0., 0.])
    # a gets every sample of class 0 right that b misses: +1/4.
    better = same.copy()
    better[:3] = True
    worse = same.copy()
    worse[:3] = False
    gain = paired_difference(better, worse, labels)
    assert gain['difference'] == pytest.approx(0.25)
    low, high = gain['interval95']
    # Resampling classes either draws class 0 or not: 0 is inside.
    assert low == 0. and 0.25 < high <= 1.
