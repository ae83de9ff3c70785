"""What PEFT checkpoints and deltas hold, and runs without EMA, through the
tools users run (train, export_delta, merge_delta, sample)."""
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import REPO, TINY_CONFIG
from finediffusion.inference import build_model
from test_tiered_dit import official_state_dict

TAXONOMY_KEY = 'backbone.y_embedder.sub2super'
TABLE = 'y_embedder.embedding_table.weight'


def tool(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, osp.join(REPO, 'tools', name),
                           *map(str, args)], capture_output=True, text=True,
                          cwd=REPO)


def ok(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout + run.stderr


@pytest.fixture(scope='module')
def config(tmp_path_factory, toy_root) -> str:
    """The shipped tiny config with FineDiffusion's PEFT on random
    'pretrained' weights in the official layout."""
    root = tmp_path_factory.mktemp('peft_files')
    base = root / 'DiT-tiny.pt'
    torch.save(official_state_dict(patch=4, in_ch=3, grid=4), base)
    path = root / 'peft_tiny.py'
    path.write_text(
        f'_base_ = [{TINY_CONFIG!r}]\n'
        f"model = dict(trainable='finediffusion', "
        f'backbone=dict(pretrained={str(base)!r}))\n'
        f'train_dataloader = dict(dataset=dict(data_root={toy_root!r}))\n'
        'train_cfg = dict(max_iters=2)\n'
        'default_hooks = dict(checkpoint=dict(interval=2))\n')
    return str(path)


def trainable_names(config: str) -> list:
    """The backbone parameters that train, read off the built model."""
    model = build_model(config)
    return [n for n, p in model.backbone.named_parameters() if p.requires_grad]


@pytest.fixture(scope='module')
def run_with_ema(config, tmp_path_factory) -> str:
    work = str(tmp_path_factory.mktemp('with_ema'))
    ok(tool('train.py', config, '--work-dir', work))
    return work


def trimmed(source: str, out: str, dropped: list) -> str:
    """A copy of a checkpoint without the ``dropped`` state-dict entries."""
    ckpt = torch.load(source, weights_only=True)
    for key in dropped:
        del ckpt['state_dict'][key]
    torch.save(ckpt, out)
    return out


def test_peft_checkpoint_holds_exactly_the_trained_state(config, run_with_ema):
    trainable = trainable_names(config)
    ckpt = torch.load(osp.join(run_with_ema, 'iter_2.pth'), weights_only=True)
    expected = ({f'backbone.{n}' for n in trainable}
                | {'ema.' + n.replace('.', '__') for n in trainable}
                | {TAXONOMY_KEY})
    assert set(ckpt['state_dict']) == expected
    assert len(ckpt['state_dict']) == 2 * len(trainable) + 1
    # AdamW's state: one entry per trainable tensor.
    assert len(ckpt['optimizer']['state']) == len(trainable)
    assert ckpt['meta']['peft'] == dict(trainable=trainable, ema=True)
    # The class names, as MMEngine keeps them.
    assert ckpt['meta']['dataset_meta']['classes'][0] == '00_square_00'

    # Resuming loads it without a key warning and continues.
    log = ok(tool('train.py', config, '--work-dir', run_with_ema, '--resume',
                  '--cfg-options', 'train_cfg.max_iters=3'))
    assert 'resumed epoch: 0, iter: 2' in log
    for warning in ('unexpected key', 'missing key', 'do not match'):
        assert warning not in log, log[-3000:]
    assert osp.isfile(osp.join(run_with_ema, 'iter_3.pth'))


def test_resume_refuses_a_checkpoint_without_a_trained_tensor(
        config, run_with_ema, tmp_path):
    dropped = [f'backbone.{TABLE}', 'ema.blocks__0__norm1__weight']
    ckpt = trimmed(osp.join(run_with_ema, 'iter_2.pth'),
                   str(tmp_path / 'iter_2.pth'), dropped)
    run = tool('train.py', config, '--work-dir', str(tmp_path), '--resume',
               ckpt, '--cfg-options', 'train_cfg.max_iters=4')
    assert run.returncode != 0
    message = run.stderr.splitlines()[-1]
    assert ckpt in message and 'missing' in message, run.stderr[-3000:]
    for key in dropped:
        assert key in message
    assert not osp.exists(tmp_path / 'iter_4.pth')


def test_run_without_ema_through_the_tools(config, tmp_path):
    """Trains, exports, merges and samples; everything holds the trained
    (raw) weights."""
    work = str(tmp_path / 'work')
    log = ok(tool('train.py', config, '--work-dir', work, '--cfg-options',
                  'model.ema_decay=None'))
    assert log.count('keeps no EMA') == 1
    ckpt_path = osp.join(work, 'iter_2.pth')
    ckpt = torch.load(ckpt_path, weights_only=True)
    trainable = trainable_names(config)
    assert set(ckpt['state_dict']) == (
        {f'backbone.{n}' for n in trainable} | {TAXONOMY_KEY})
    assert ckpt['meta']['peft'] == dict(trainable=trainable, ema=False)
    raw = {n: ckpt['state_dict'][f'backbone.{n}'] for n in trainable}

    delta = str(tmp_path / 'delta.safetensors')
    out = ok(tool('export_delta.py', ckpt_path, delta))
    assert 'raw weights' in out and 'no EMA' in out
    with safe_open(delta, framework='pt') as f:
        assert f.metadata()['weights'] == 'raw'
    tensors = load_file(delta)
    for name in trainable:
        assert torch.equal(tensors[f'backbone.{name}'], raw[name]), name

    merged = str(tmp_path / 'merged.safetensors')
    assert 'raw weights' in ok(tool('merge_delta.py', config, delta, merged))
    merged = load_file(merged)
    base = torch.load(Config.fromfile(config).model.backbone.pretrained)
    for name, value in merged.items():
        if name in raw:
            assert torch.equal(value, raw[name]), name
        elif name in base and name != TABLE:
            assert torch.equal(value, base[name]), name

    # The config keeps an EMA (0.999): from the checkpoint without one it
    # samples the trained weights, as from the delta.
    images = {}
    for weights in (ckpt_path, delta):
        folder = str(tmp_path / ('samples_' + osp.basename(weights)))
        ok(tool('sample.py', config, weights, '--classes', '1', '3', '-n',
                '1', '--steps', '3', '--out', folder))
        images[weights] = [
            osp.join(folder, sub, '0.png') for sub in ('1_00_square_01',
                                                       '3_01_disc_01')]
    for a, b in zip(*images.values()):
        with open(a, 'rb') as fa, open(b, 'rb') as fb:
            assert fa.read() == fb.read(), (a, b)


def test_delta_without_trained_tensors_is_refused(config, run_with_ema,
                                                  tmp_path):
    delta = str(tmp_path / 'delta.safetensors')
    ok(tool('export_delta.py', osp.join(run_with_ema, 'iter_2.pth'), delta))
    with safe_open(delta, framework='pt') as f:
        metadata = f.metadata()
    taxonomy_only = str(tmp_path / 'taxonomy_only.safetensors')
    save_file({TAXONOMY_KEY: load_file(delta)[TAXONOMY_KEY]}, taxonomy_only,
              metadata=metadata)
    merged = str(tmp_path / 'merged.safetensors')
    for run in (tool('merge_delta.py', config, taxonomy_only, merged),
                tool('sample.py', config, taxonomy_only, '--classes', '0',
                     '-n', '1', '--steps', '2', '--out',
                     str(tmp_path / 'samples'))):
        assert run.returncode != 0
        message = run.stderr.splitlines()[-1]
        assert taxonomy_only in message and 'metadata declares' in message
        assert f'backbone.{TABLE}' in message, message
        assert 'backbone.blocks.0.norm1.weight' in message, message
    assert not osp.exists(merged)
    assert not osp.exists(tmp_path / 'samples')


def test_checkpoint_without_trained_tensors_is_refused(config, run_with_ema,
                                                       tmp_path):
    dropped = [f'backbone.{TABLE}', 'ema.blocks__0__norm1__weight']
    ckpt = trimmed(osp.join(run_with_ema, 'iter_2.pth'),
                   str(tmp_path / 'trimmed.pth'), dropped)
    delta = str(tmp_path / 'delta.safetensors')
    for run in (tool('export_delta.py', ckpt, delta),
                tool('sample.py', config, ckpt, '--classes', '0', '-n', '1',
                     '--steps', '2', '--out', str(tmp_path / 'samples'))):
        assert run.returncode != 0
        message = run.stderr.splitlines()[-1]
        assert ckpt in message and 'meta.peft declares' in message, message
        for key in dropped:
            assert key in message
    assert not osp.exists(delta)
    assert not osp.exists(tmp_path / 'samples')
