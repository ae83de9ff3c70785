"""Shared fixtures: the toy hierarchy on disk and the tiny CPU config."""
import os.path as osp

import pytest

import finediffusion  # noqa: F401,I001  (compatibility fixes first)
from finediffusion.datasets import write_toy_hierarchy
from mmagic.utils import register_all_modules
from mmengine.config import Config

# Builds outside a Runner resolve names in MMagic's scope, as in a Runner.
register_all_modules(init_default_scope=True)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY_CONFIG = osp.join(REPO, 'configs', 'finediffusion_tiny_cpu.py')


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
