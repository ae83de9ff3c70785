"""The main job (tools/demo.py) end to end at a size where nothing learns:
every stage runs through the real Runner, and a rerun reuses them."""
import json
import os.path as osp
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import load_tool

SMOKE = dict(
    images=dict(base=2, fine=2, val=2),
    judge=dict(iters=3, batch=16),
    model=dict(arch=dict(depth=1, hidden_size=32, num_heads=2),
               patch_size=8),
    pretrain=dict(iters=3, batch=8, lr=1e-3, ema=0.9),
    finetune=dict(iters=3, batch=8, lr=1e-3, ema=0.9),
    sample=dict(per_class=2, steps=2, batch=100, scale=4.0),
    workers=0,
    amp=False)


def test_demo_runs_every_stage_and_reuses_them(tmp_path, monkeypatch,
                                               capsys):
    demo = load_tool('demo')
    monkeypatch.setitem(demo.SCALES, 'cpu', SMOKE)
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


def test_paired_difference_resamples_whole_classes():
    demo = load_tool('demo')
    labels = torch.arange(4).repeat_interleave(3)
    same = np.array([True, False, True] * 4)
    gain = demo.paired_difference(same, same, labels)
    assert gain == dict(difference=0., interval95=[0., 0.])
    # a gets every sample of class 0 right that b misses: +1/4.
    better = same.copy()
    better[:3] = True
    worse = same.copy()
    worse[:3] = False
    gain = demo.paired_difference(better, worse, labels)
    assert gain['difference'] == pytest.approx(0.25)
    low, high = gain['interval95']
    # Resampling classes either draws class 0 or not: 0 is inside.
    assert low == 0. and 0.25 < high <= 1.
