"""A checkpoint with a tensor of another shape than the model's is refused
at load, by ``load_from`` and ``--resume`` alike, naming the file, the key
and both shapes (MMEngine's non-strict load would only log it and train on
from the model's initial tensor)."""
import os.path as osp
import subprocess
import sys

import pytest
import torch

from conftest import REPO, TINY_CONFIG


def train(toy_root, work_dir, *options, resume=None):
    args = [sys.executable, osp.join(REPO, 'tools/train.py'), TINY_CONFIG,
            '--work-dir', str(work_dir)]
    if resume:
        args += ['--resume', resume]
    args += ['--cfg-options', f'train_dataloader.dataset.data_root={toy_root}',
             'train_cfg.max_iters=2', 'default_hooks.checkpoint.interval=1',
             *options]
    return subprocess.run(args, capture_output=True, text=True)


@pytest.fixture(scope='module')
def fixed_variance_checkpoint(toy_root, tmp_path_factory) -> str:
    """A checkpoint of the tiny config with learn_sigma=False: its
    final_layer predicts 3 channels instead of 6."""
    work_dir = tmp_path_factory.mktemp('fixed_variance')
    run = train(toy_root, work_dir, 'model.backbone.learn_sigma=False',
                'train_cfg.max_iters=1')
    assert run.returncode == 0, run.stderr[-3000:]
    return str(work_dir / 'iter_1.pth')


def test_load_from_of_another_architecture_is_refused(
        toy_root, fixed_variance_checkpoint, tmp_path):
    run = train(toy_root, tmp_path / 'work',
                f'load_from={fixed_variance_checkpoint}')
    assert run.returncode != 0
    assert 'ValueError' in run.stderr
    # 4 x 4 patches of 3 channels against 6 (learned variance).
    assert (f'{fixed_variance_checkpoint}: ' in run.stderr
            and 'backbone.final_layer.linear.weight (checkpoint [48, 64], '
            'model [96, 64])' in run.stderr), run.stderr[-3000:]
    # Refused before training: no step ran, no checkpoint was written.
    assert not osp.exists(tmp_path / 'work' / 'iter_1.pth')


def test_resume_of_a_wrong_shaped_tensor_is_refused(
        toy_root, fixed_variance_checkpoint, tmp_path):
    # A checkpoint of the same architecture with one tensor of another
    # shape (its EMA keeps the right one).
    checkpoint = torch.load(fixed_variance_checkpoint, map_location='cpu',
                            weights_only=False)
    key = 'backbone.blocks.0.mlp.fc1.weight'
    shape = list(checkpoint['state_dict'][key].shape)
    checkpoint['state_dict'][key] = checkpoint['state_dict'][key][:-1]
    path = str(tmp_path / 'edited.pth')
    torch.save(checkpoint, path)
    run = train(toy_root, tmp_path / 'work',
                'model.backbone.learn_sigma=False', resume=path)
    assert run.returncode != 0
    wrong = [shape[0] - 1] + shape[1:]
    assert (f'{path}: 1 tensors have another shape' in run.stderr
            and f'{key} (checkpoint {wrong}, model {shape})' in run.stderr
            ), run.stderr[-3000:]
    assert not osp.exists(tmp_path / 'work' / 'iter_2.pth')


def test_sample_tool_names_a_checkpoint_of_another_architecture(
        toy_root, fixed_variance_checkpoint, tmp_path):
    """tools/sample.py loads a .pth outside MMEngine: the same refusal."""
    out = tmp_path / 'samples'
    run = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/sample.py'), TINY_CONFIG,
         fixed_variance_checkpoint, '--classes', '0', '-n', '1', '--steps',
         '2', '--out', str(out)], capture_output=True, text=True)
    assert run.returncode != 0
    assert (f'{fixed_variance_checkpoint}: ' in run.stderr
            and 'backbone.final_layer.linear.weight (checkpoint [48, 64], '
            'model [96, 64])' in run.stderr), run.stderr[-3000:]
    assert not osp.exists(out)
