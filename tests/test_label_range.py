"""Subclass labels beyond the model's class table are refused where they
enter (training data, test data, sampling), naming the labels and the
counts, instead of failing mid-step or silently reading superclass rows."""
import glob
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torchvision
from mmengine.config import Config

from conftest import REPO, TINY_CONFIG
from finediffusion.datasets import write_toy_hierarchy
from mmagic.registry import MODELS


@pytest.fixture(scope='module')
def six_class_root(tmp_path_factory):
    """The toy hierarchy with 3 x 2 = 6 subclasses (the tiny model has 4)."""
    root = str(tmp_path_factory.mktemp('toy_hierarchy_6'))
    write_toy_hierarchy(root, num_superclasses=3, subclasses_per_super=2,
                        images_per_class=2)
    return root


@pytest.fixture
def tiny_model():
    cfg = Config.fromfile(TINY_CONFIG)
    torch.manual_seed(0)
    return MODELS.build(cfg.model).eval()


def test_train_refuses_more_classes_than_rows(six_class_root, tmp_path):
    work_dir = str(tmp_path / 'work_dir')
    run = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/train.py'), TINY_CONFIG,
         '--work-dir', work_dir, '--cfg-options',
         f'train_dataloader.dataset.data_root={six_class_root}',
         'train_cfg.max_iters=2'],
        capture_output=True, text=True)
    assert run.returncode != 0
    assert ('the training data has 6 classes' in run.stderr
            and '4 subclass rows' in run.stderr), run.stderr[-3000:]
    # Refused before the first step.
    assert 'Iter(train)' not in run.stdout + run.stderr
    assert not glob.glob(osp.join(work_dir, '*.pth'))


def test_annotation_labels_beyond_the_table_are_named(toy_root, tmp_path):
    """MMagic's BasicConditionalDataset from an annotation file declares no
    class count: each label is checked, and the bad ones named."""
    from finediffusion.engine.label_range import check_label_range
    from mmagic.registry import DATASETS
    files = sorted(glob.glob(osp.join(toy_root, '*', '*.png')))[:4]
    ann = tmp_path / 'ann.txt'
    ann.write_text(''.join(f'{f} {label}\n'
                           for f, label in zip(files, [0, 3, 5, 1])))
    dataset = DATASETS.build(dict(type='BasicConditionalDataset',
                                  ann_file=str(ann), pipeline=[]))
    with pytest.raises(ValueError, match=r'1 training samples have labels '
                       r"outside the model's 4 subclass rows.*label 5 "
                       r'\(dataset index 2'):
        check_label_range(dataset, 4, 'training')
    check_label_range(dataset, 6, 'training')


def test_sample_refuses_labels_beyond_the_table(tiny_model):
    with pytest.raises(ValueError, match=r'\[4\].*has 4 subclasses'):
        tiny_model.sample(torch.tensor([0, 4, 4]), num_sampling_steps=2)
    with pytest.raises(ValueError, match=r'\[-1\].*has 4 subclasses'):
        tiny_model.sample(torch.tensor([-1]), num_sampling_steps=2)
    assert tiny_model.sample(torch.tensor([3]), num_sampling_steps=2).shape == (
        1, 3, 16, 16)


@pytest.mark.parametrize('tier', ['sub', 'super'])
def test_rows_of_labels_beyond_the_table_fail_the_lookup(tiny_model, tier):
    """Without a check (FineGrainedCFG, a training batch), label 4 of 4
    classes must not read superclass 0's row (or wrap around)."""
    backbone = tiny_model.backbone
    embedder = backbone.y_embedder
    assert embedder.rows(torch.tensor([3]), tier).tolist() == [
        3 if tier == 'sub' else 4 + 1]
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([10])
    for label in (4, -1):
        rows = embedder.rows(torch.tensor([label]), tier)
        with pytest.raises(IndexError):
            backbone(x, t, rows)


def test_sample_tool_refuses_a_class_beyond_the_table(tiny_model, tmp_path):
    ckpt = str(tmp_path / 'tiny.pth')
    torch.save(dict(state_dict=tiny_model.state_dict(), meta={}), ckpt)
    run = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/sample.py'), TINY_CONFIG,
         ckpt, '--classes', '4', '-n', '1', '--steps', '2', '--sampler',
         'ddim', '--device', 'cpu', '--out', str(tmp_path / 'samples')],
        capture_output=True, text=True)
    assert run.returncode != 0
    assert 'class id 4 is out of range' in run.stderr, run.stderr[-3000:]
    assert '4 subclasses' in run.stderr
    assert not glob.glob(str(tmp_path / 'samples' / '*'))


def test_test_tool_refuses_more_classes_than_rows(tiny_model, six_class_root,
                                                  tmp_path):
    cfg = Config.fromfile(TINY_CONFIG)
    cfg.model.num_sampling_steps = 2
    cfg.test_dataloader = dict(
        batch_size=4, num_workers=0,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(type='BasicConditionalDataset',
                     data_root=six_class_root,
                     pipeline=[dict(type='LoadImageFromFile', key='gt'),
                               dict(type='PackInputs')]))
    alexnet = str(tmp_path / 'alexnet-owt-7be5be79.pth')
    torch.save(torchvision.models.alexnet().state_dict(), alexnet)
    cfg.test_evaluator = dict(type='Evaluator', metrics=[
        dict(type='LPIPSDiversity', fake_nums=8, samples_per_class=2,
             backbone_path=alexnet)])
    cfg.test_cfg = dict(type='MultiTestLoop')
    config = str(tmp_path / 'eval_cfg.py')
    cfg.dump(config)
    ckpt = str(tmp_path / 'tiny.pth')
    torch.save(dict(state_dict=tiny_model.state_dict(), meta={}), ckpt)
    run = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/test.py'), config, ckpt,
         '--work-dir', str(tmp_path / 'eval')],
        capture_output=True, text=True)
    assert run.returncode != 0
    assert ('the test data has 6 classes' in run.stderr
            and '4 subclass rows' in run.stderr), run.stderr[-3000:]
    assert not osp.isfile(tmp_path / 'eval' / 'metrics.json')
