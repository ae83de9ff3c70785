"""Shared fixtures: the toy hierarchy on disk and the tiny CPU config."""
import importlib.util
import os.path as osp
import socket
import subprocess
import sys
from types import ModuleType

import pytest
import torch

import finediffusion  # noqa: F401,I001  (compatibility fixes first)
from finediffusion.datasets import write_toy_hierarchy
from mmagic.utils import register_all_modules
from mmengine.config import Config

# Builds outside a Runner resolve names in MMagic's scope, as in a Runner.
register_all_modules(init_default_scope=True)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY_CONFIG = osp.join(REPO, 'configs', 'finediffusion_tiny_cpu.py')


def load_tool(name: str) -> ModuleType:
    """tools/NAME.py as a module (its main() not run)."""
    spec = importlib.util.spec_from_file_location(
        f'tool_{name}', osp.join(REPO, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='session')
def toy_root(tmp_path_factory) -> str:
    """The toy hierarchy the tiny config expects (2 x 2 classes)."""
    root = str(tmp_path_factory.mktemp('toy_hierarchy'))
    write_toy_hierarchy(root, num_superclasses=2, subclasses_per_super=2)
    return root


@pytest.fixture
def tiny_cfg(toy_root, tmp_path) -> Config:
    """The tiny CPU config on the toy data, writing into a fresh work dir."""
    cfg = Config.fromfile(TINY_CONFIG)
    cfg.train_dataloader.dataset.data_root = toy_root
    cfg.work_dir = str(tmp_path / 'work_dir')
    cfg.default_hooks.logger.interval = 1
    return cfg


def train_tiny(work, toy_root: str, *options: str) -> None:
    """Trains the tiny CPU config on the toy set for 2 iterations through
    tools/train.py into ``work`` (iter_2.pth), with more ``--cfg-options``.
    """
    run = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/train.py'), TINY_CONFIG,
         '--work-dir', str(work), '--cfg-options',
         f'train_dataloader.dataset.data_root={toy_root}',
         'train_cfg.max_iters=2', 'default_hooks.checkpoint.interval=2',
         *options],
        capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory, toy_root) -> tuple:
    """The tiny CPU config trained for 2 iterations through tools/train.py
    (config, checkpoint, work dir); EMA decay 0, so that the sampled (EMA)
    weights are the trained ones."""
    work = tmp_path_factory.mktemp('tiny_run')
    train_tiny(work, toy_root, 'model.ema_decay=0.0')
    config = osp.join(work, 'finediffusion_tiny_cpu.py')
    return config, str(work / 'iter_2.pth'), work


RANKED_CONFIG = """_base_ = [{base!r}]
taxonomy = dict(_delete_=True, type='HierarchyDataset', data_root={root!r},
                ranks=('genus', 'family'))
model = dict(backbone=dict(taxonomy=taxonomy, num_classes=80, null_prob=0.1))
train_dataloader = dict(dataset=dict(taxonomy, pipeline={{{{_base_.train_pipeline}}}}))
"""


@pytest.fixture(scope='session')
def ranked_run(tmp_path_factory) -> tuple:
    """The tiny CPU config on the three-tier synthetic set (80 species, 20
    genera, 10 families; 16 px), with a null row, trained for 2 iterations
    through tools/train.py (config, checkpoint, work dir)."""
    from finediffusion.datasets.synthetic import write_synthetic_hierarchy
    root = tmp_path_factory.mktemp('ranked_set')
    data = write_synthetic_hierarchy(str(root), 'ranked', {'train': 1},
                                     size=16, workers=1)['train']
    work = tmp_path_factory.mktemp('ranked_run')
    config = work / 'ranked_tiny.py'
    config.write_text(RANKED_CONFIG.format(base=TINY_CONFIG, root=data))
    run = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/train.py'), str(config),
         '--work-dir', str(work), '--cfg-options', 'train_cfg.max_iters=2',
         'default_hooks.checkpoint.interval=2', 'model.ema_decay=0.0'],
        capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return osp.join(work, 'ranked_tiny.py'), str(work / 'iter_2.pth'), work


@pytest.fixture(scope='session')
def vae_folder(tmp_path_factory) -> str:
    """A tiny random diffusers AutoencoderKL saved as a local folder (the
    SD-VAE weights cannot be downloaded here); 16 px images to 8 x 8 x 4."""
    from diffusers import AutoencoderKL
    folder = tmp_path_factory.mktemp('sd-vae-tiny')
    torch.manual_seed(0)
    AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=('DownEncoderBlock2D', ) * 2,
        up_block_types=('UpDecoderBlock2D', ) * 2,
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8,
        sample_size=16).save_pretrained(folder)
    return str(folder)


def free_port() -> str:
    """A TCP port free now on this machine, for a torchrun rendezvous."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return str(sock.getsockname()[1])


def toy_test_dataloader(toy_root: str) -> dict:
    """A test loader of the toy images, in order, batches of 4."""
    return dict(
        batch_size=4, num_workers=0,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(type='BasicConditionalDataset', data_root=toy_root,
                     pipeline=[dict(type='LoadImageFromFile', key='gt'),
                               dict(type='PackInputs')]))
