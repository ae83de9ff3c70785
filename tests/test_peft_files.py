"""What PEFT checkpoints and deltas hold, and runs without EMA, through the
tools users run (train, export_delta, merge_delta, sample, test); files that
do not give every tensor, and outputs that would replace an input, are
refused."""
import hashlib
import json
import os
import os.path as osp
import shutil
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


@pytest.fixture(scope='module')
def delta(run_with_ema, tmp_path_factory) -> str:
    """The delta (EMA weights) of the PEFT run."""
    path = str(tmp_path_factory.mktemp('delta') / 'delta.safetensors')
    ok(tool('export_delta.py', osp.join(run_with_ema, 'iter_2.pth'), path))
    return path


def refusal(run: subprocess.CompletedProcess) -> str:
    """The one-line error of a tool that must have refused."""
    assert run.returncode != 0, run.stdout[-3000:]
    return run.stderr.strip().splitlines()[-1]


def test_peft_weights_without_a_base_are_refused(config, run_with_ema, delta,
                                                 tmp_path):
    """The PEFT run's delta and checkpoint used with its config but
    model.backbone.pretrained unset: every frozen tensor would be random."""
    no_base = str(tmp_path / 'no_base.py')
    with open(no_base, 'w') as f:
        f.write(f'_base_ = [{config!r}]\n'
                'model = dict(backbone=dict(pretrained=None))\n')
    ckpt = osp.join(run_with_ema, 'iter_2.pth')
    merged = str(tmp_path / 'merged.safetensors')
    runs = [
        (delta, tool('merge_delta.py', no_base, delta, merged)),
        (delta, tool('test.py', no_base, delta, '--work-dir',
                     tmp_path / 'eval')),
        (ckpt, tool('sample.py', no_base, ckpt, '--classes', '0', '-n', '1',
                    '--steps', '2', '--out', tmp_path / 'samples')),
        # Resuming a PEFT checkpoint into a model without its base.
        (ckpt, tool('train.py', no_base, '--work-dir', tmp_path / 'resume',
                    '--resume', ckpt, '--cfg-options',
                    'train_cfg.max_iters=4')),
    ]
    held = len(trainable_names(config))
    for source, run in runs:
        message = refusal(run)
        assert source in message, run.stderr[-3000:]
        assert f'holds {held} of the backbone' in message, message
        assert 'backbone.x_embedder.proj.weight' in message, message
        assert 'model.backbone.pretrained' in message, message
    assert not osp.exists(merged)
    assert not osp.exists(tmp_path / 'samples')
    assert not osp.exists(tmp_path / 'resume' / 'iter_4.pth')
    # With the base, as the message says, the same delta merges.
    base = Config.fromfile(config).model.backbone.pretrained
    ok(tool('merge_delta.py', no_base, delta, merged, '--base', base))
    assert torch.equal(load_file(merged)['x_embedder.proj.weight'],
                       torch.load(base)['x_embedder.proj.weight'])


def test_weights_without_the_class_table_are_refused(config, run_with_ema,
                                                     delta, tmp_path):
    """A delta and a checkpoint whose metadata does not declare the class
    table either: it never comes from the base, so it would be random."""
    table = f'backbone.{TABLE}'
    tensors = load_file(delta)
    del tensors[table]
    with safe_open(delta, framework='pt') as f:
        metadata = f.metadata()
    trainable = [n for n in json.loads(metadata['trainable']) if n != TABLE]
    no_table = str(tmp_path / 'no_table.safetensors')
    save_file(tensors, no_table,
              metadata=dict(metadata, trainable=json.dumps(trainable)))
    ckpt = torch.load(osp.join(run_with_ema, 'iter_2.pth'), weights_only=True)
    for key in (table, 'ema.' + TABLE.replace('.', '__')):
        del ckpt['state_dict'][key]
    ckpt['meta']['peft']['trainable'].remove(TABLE)
    no_table_ckpt = str(tmp_path / 'no_table.pth')
    torch.save(ckpt, no_table_ckpt)
    merged = str(tmp_path / 'merged.safetensors')
    for source, run in (
            (no_table, tool('merge_delta.py', config, no_table, merged)),
            (no_table_ckpt,
             tool('sample.py', config, no_table_ckpt, '--classes', '0', '-n',
                  '1', '--steps', '2', '--out', tmp_path / 'samples'))):
        message = refusal(run)
        assert source in message and table in message, run.stderr[-3000:]
    assert not osp.exists(merged)
    assert not osp.exists(tmp_path / 'samples')

    # Nor can a run train without it (BitFit alone leaves it random).
    message = refusal(tool('train.py', config, '--work-dir', tmp_path / 'bf',
                           '--cfg-options', 'model.trainable=bitfit'))
    assert "trainable='bitfit'" in message and TABLE in message, message
    assert not osp.exists(tmp_path / 'bf' / 'iter_2.pth')


def digest(path: str) -> str:
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_output_that_is_an_input_is_refused(config, run_with_ema, delta,
                                            tmp_path):
    ckpt = str(tmp_path / 'iter_2.pth')
    shutil.copy(osp.join(run_with_ema, 'iter_2.pth'), ckpt)
    own_delta = str(tmp_path / 'delta.safetensors')
    shutil.copy(delta, own_delta)
    base = str(tmp_path / 'base.pt')
    shutil.copy(Config.fromfile(config).model.backbone.pretrained, base)
    # Another spelling of the base's path.
    base_again = osp.join(str(tmp_path), 'sub', '..', 'base.pt')
    os.mkdir(tmp_path / 'sub')
    before = {path: digest(path) for path in (ckpt, own_delta, base)}
    for out, run in (
            (ckpt, tool('export_delta.py', ckpt, ckpt)),
            (own_delta, tool('merge_delta.py', config, own_delta, own_delta)),
            (base_again, tool('merge_delta.py', config, own_delta,
                              base_again, '--base', base))):
        message = refusal(run)
        assert out in message and 'is the input' in message, message
    assert {path: digest(path) for path in before} == before
