"""A checkpoint whose pickle runs code is refused on every load path of the
product, also with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 set (the workaround
MMEngine users on torch >= 2.6 are told to use): ``--resume``,
``load_from``, ``tools/test.py``, MMEngine's loaders (mmpretrain's
``init_model`` and ``init_cfg`` use them) and its http(s) cache."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint

from conftest import REPO, TINY_CONFIG, toy_test_dataloader

UNSAFE = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD='1')


class Payload:
    """Unpickled, creates the folder ``marker``: proof the file ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker, )


@pytest.fixture
def hostile(tmp_path):
    """A checkpoint-shaped file whose meta runs code; and its marker."""
    marker = str(tmp_path / 'code_ran')
    path = str(tmp_path / 'hostile.pth')
    torch.save(dict(state_dict={}, meta=dict(payload=Payload(marker))), path)
    return path, marker


def tool(name, *args):
    return subprocess.run([sys.executable, osp.join(REPO, 'tools', name),
                           *map(str, args)], capture_output=True, text=True,
                          env=UNSAFE, cwd=REPO)


def assert_refused(run, path, marker):
    assert run.returncode != 0
    assert not osp.exists(marker), 'the file ran code'
    assert 'Weights only load failed' in run.stderr, run.stderr[-3000:]
    assert path in run.stderr, run.stderr[-3000:]


def test_resume_refuses_a_hostile_checkpoint(hostile, toy_root, tmp_path):
    path, marker = hostile
    run = tool('train.py', TINY_CONFIG, '--work-dir', tmp_path / 'work',
               '--resume', path, '--cfg-options',
               f'train_dataloader.dataset.data_root={toy_root}',
               'train_cfg.max_iters=1')
    assert_refused(run, path, marker)
    assert not osp.exists(tmp_path / 'work' / 'iter_1.pth')


def test_load_from_refuses_a_hostile_checkpoint(hostile, tiny_cfg,
                                                monkeypatch):
    path, marker = hostile
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    cfg = tiny_cfg.copy()
    cfg.load_from = path
    cfg.experiment_name = 'hostile_load_from'
    runner = Runner.from_cfg(cfg)
    with pytest.raises(Exception, match='Weights only load failed'):
        runner.load_or_resume()
    assert not osp.exists(marker)


def test_test_tool_refuses_a_hostile_checkpoint(hostile, toy_root, tmp_path):
    path, marker = hostile
    cfg = Config.fromfile(TINY_CONFIG)
    cfg.test_dataloader = toy_test_dataloader(toy_root)
    cfg.test_evaluator = dict(type='Evaluator', metrics=[])
    cfg.test_cfg = dict(type='MultiTestLoop')
    config = str(tmp_path / 'eval_cfg.py')
    cfg.dump(config)
    run = tool('test.py', config, path, '--work-dir', tmp_path / 'eval')
    assert_refused(run, path, marker)
    assert not osp.isfile(tmp_path / 'eval' / 'metrics.json')


def test_sample_tool_refuses_a_hostile_checkpoint(hostile, tmp_path):
    path, marker = hostile
    run = tool('sample.py', TINY_CONFIG, path, '--classes', '0', '-n', '1',
               '--steps', '2', '--out', tmp_path / 'samples')
    assert_refused(run, path, marker)


def test_mmengine_loader_refuses_a_hostile_checkpoint(hostile, monkeypatch):
    """What mmpretrain's init_model (the fidelity Judge) and init_cfg's
    Pretrained call."""
    path, marker = hostile
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    with pytest.raises(Exception, match='Weights only load failed'):
        _load_checkpoint(path, map_location='cpu')
    assert not osp.exists(marker)


def test_mmengine_http_loader_refuses_a_cached_hostile_file(
        hostile, tmp_path, monkeypatch):
    """torch.hub defaults to full unpickling even without the variable: a
    file in its cache under the URL's name is what an http(s)://,
    torchvision:// or open-mmlab:// checkpoint loads."""
    path, marker = hostile
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    cache = tmp_path / 'torch_home' / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    os.replace(path, cache / 'hostile.pth')
    with pytest.raises(Exception, match='Weights only load failed'):
        CheckpointLoader.load_checkpoint('https://127.0.0.1:9/hostile.pth',
                                         map_location='cpu')
    assert not osp.exists(marker)


def test_mmengine_checkpoints_still_load_with_the_variable(
        tiny_cfg, monkeypatch):
    """The explicit weights_only keeps MMEngine's own files loading."""
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    cfg = tiny_cfg.copy()
    cfg.train_cfg.max_iters = 1
    cfg.default_hooks.checkpoint.interval = 1
    Runner.from_cfg(cfg).train()
    checkpoint = _load_checkpoint(osp.join(cfg.work_dir, 'iter_1.pth'),
                                  map_location='cpu')
    assert checkpoint['meta']['iter'] == 1


def test_product_code_reads_checkpoints_through_load_weights():
    """A new ``torch.load`` in the package or the tools would be read with
    whatever the environment says: every read goes through load_weights."""
    import ast
    found = []
    for top in ('projects', 'tools'):
        for folder, _, names in os.walk(osp.join(REPO, top)):
            for name in names:
                path = osp.join(folder, name)
                if not name.endswith('.py') or name == 'weights_only.py':
                    continue
                with open(path) as f:
                    tree = ast.parse(f.read(), path)
                found += [f'{osp.relpath(path, REPO)}:{node.lineno}'
                          for node in ast.walk(tree)
                          if isinstance(node, ast.Attribute)
                          and node.attr == 'load'
                          and isinstance(node.value, ast.Name)
                          and node.value.id == 'torch']
    assert not found, found
