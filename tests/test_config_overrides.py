"""A change of a config's shared spec (taxonomy, data_root, cache, the
pipelines), by a child config or --cfg-options, reaches every entry that
copies it (finediffusion.config), through the tools' config loading; a
change that no entry takes is refused."""
import os.path as osp
import sys

import pytest
from mmengine.config import Config
from mmengine.runner import Runner

from conftest import REPO, load_tool
from finediffusion.taxonomy import spec_taxonomy
from mmagic.registry import DATASETS
from test_configs import xl_on_meta
from test_datasets import CATEGORIES, inat_json, write_image

INAT = osp.join(REPO, 'configs', 'finediffusion_inat.py')
# CATEGORIES by id: Danaus and Vanessa (Insects, Nymphalidae), Turdus
# (Birds, Turdidae).
BY_SUPERCATEGORY = ([1, 1, 0], ['Birds', 'Insects'])
BY_FAMILY = ([0, 0, 1], ['Nymphalidae', 'Turdidae'])


def train_config(monkeypatch, *argv):
    """The config tools/train.py runs for this command line."""
    train = load_tool('train')
    monkeypatch.setattr(sys, 'argv', ['tools/train.py', *argv])
    return train.build_config(train.parse_args())


def taxonomies(cfg):
    """(sub2super, superclass names) of the model and of each dataset."""
    model = xl_on_meta(cfg).backbone.y_embedder.sub2super.tolist()
    named, _ = spec_taxonomy(cfg.model.backbone.taxonomy)
    out = [(model, named.super_names)]
    for loader in ('train_dataloader', 'test_dataloader', 'val_dataloader'):
        tax = DATASETS.build(cfg[loader].dataset).taxonomy
        out.append((tax.sub2super, tax.super_names))
    return out


@pytest.fixture
def inat_root(tmp_path):
    root = tmp_path / 'inat'
    inat_json(root, CATEGORIES)
    inat_json(root, CATEGORIES, name='val.json')
    return str(root)


def test_child_config_super_rank_reaches_model_and_datasets(
        tmp_path, monkeypatch, inat_root):
    child = tmp_path / 'inat_family.py'
    child.write_text(f"_base_ = [{INAT!r}]\n"
                     f"data_root = {inat_root!r}\n"
                     "taxonomy = dict(super_rank='family')\n")
    cfg = train_config(monkeypatch, str(child))
    assert taxonomies(cfg) == [BY_FAMILY] * 4
    # Without the child's changes, the supercategories.
    cfg = train_config(monkeypatch, INAT, '--cfg-options',
                       f'data_root={inat_root}')
    assert taxonomies(cfg) == [BY_SUPERCATEGORY] * 4


def test_cfg_options_super_rank_reaches_model_and_datasets(
        monkeypatch, inat_root):
    cfg = train_config(monkeypatch, INAT, '--cfg-options',
                       'taxonomy.super_rank=family',
                       f'taxonomy.data_root={inat_root}')
    assert taxonomies(cfg) == [BY_FAMILY] * 4
    # The test set keeps its own annotation file.
    assert cfg.test_dataloader.dataset.ann_file == 'val.json'
    assert cfg.train_dataloader.dataset.ann_file == 'train_mini.json'


def test_an_entry_changed_itself_keeps_its_value(monkeypatch, inat_root):
    """As scripts point one dataset elsewhere (tools/benchmark.py, the
    tests): the spec's other copies and its other parts still follow it."""
    cfg = train_config(monkeypatch, INAT, '--cfg-options',
                       'test_dataloader.dataset.super_rank=genus',
                       'taxonomy.super_rank=family',
                       f'data_root={inat_root}')
    assert cfg.test_dataloader.dataset.super_rank == 'genus'
    assert cfg.model.backbone.taxonomy.super_rank == 'family'
    assert cfg.val_dataloader.dataset.super_rank == 'family'
    assert cfg.test_dataloader.dataset.data_root == inat_root
    # Applying again (a dumped config, a resumed run) changes nothing.
    from finediffusion.config import apply_copied_specs
    before = cfg.to_dict()
    assert apply_copied_specs(cfg) == [] and cfg.to_dict() == before


@pytest.mark.parametrize('name,option,entries', [
    ('finediffusion_vegfru.py', 'data_root=/d/vegfru',
     {'model.backbone.taxonomy.data_root': '/d/vegfru',
      'train_dataloader.dataset.data_root': '/d/vegfru',
      'test_dataloader.dataset.data_root': '/d/vegfru',
      'test_dataloader.dataset.split': 'test'}),
    ('finediffusion_cub200.py', 'taxonomy.ann_file=genera.csv',
     {'model.backbone.taxonomy.ann_file': 'genera.csv',
      'val_dataloader.dataset.ann_file': 'genera.csv'}),
    ('finediffusion_inat_latents.py', 'cache.cache_dir=/d/latents',
     {'model.backbone.taxonomy.cache_dir': '/d/latents',
      'train_dataloader.dataset.cache_dir': '/d/latents'}),
    ('finediffusion_inat_512.py', 'test_pipeline.1.size=384',
     {'test_dataloader.dataset.pipeline.1.size': 384,
      'val_dataloader.dataset.pipeline.1.size': 384,
      'train_dataloader.dataset.pipeline.1.size': 512}),
    ('synthetic/pretrain_base.py', 'data_root=/d/base',
     {'model.backbone.taxonomy.data_root': '/d/base',
      'train_dataloader.dataset.data_root': '/d/base'}),
    ('finediffusion_synthetic.py', 'data_root=/d/fine',
     {'model.backbone.taxonomy.data_root': '/d/fine',
      'train_dataloader.dataset.data_root': '/d/fine'}),
    ('finediffusion_tiny_cpu.py', 'taxonomy=[0,1,1,1]',
     {'model.backbone.taxonomy': [0, 1, 1, 1]}),
    ('synthetic/judge.py', 'num_classes=10',
     {'model.head.num_classes': 10, 'data_preprocessor.num_classes': 10}),
])
def test_shared_specs_of_every_config_reach_their_copies(monkeypatch, name,
                                                         option, entries):
    cfg = train_config(monkeypatch, osp.join(REPO, 'configs', name),
                       '--cfg-options', option)
    for path, value in entries.items():
        entry = cfg
        for key in path.split('.'):
            entry = entry[int(key)] if key.isdigit() else entry[key]
        assert entry == value, path


def test_a_change_that_no_entry_takes_is_refused(monkeypatch):
    # The latent config trains on the cache: no entry copies the image
    # pipeline any more.
    with pytest.raises(SystemExit, match=r"error: train_pipeline = \[.*\] "
                       r'has no effect: every entry that copies '
                       r'train_pipeline sets its own value '
                       r'\(train_dataloader.dataset.pipeline\)'):
        train_config(
            monkeypatch, osp.join(REPO, 'configs',
                                  'finediffusion_inat_latents.py'),
            '--cfg-options', 'train_pipeline.1.size=512')


def test_data_root_option_trains_through_the_runner(tmp_path, monkeypatch):
    """The demo's pretraining config: --cfg-options data_root=... reaches
    the model's class table and the training set of a real run."""
    root = tmp_path / 'base'
    for path in ('shapes/square/0.png', 'shapes/disc/1.png',
                 'hues/red/2.png'):
        write_image(str(root / path), size=(32, 32))
    cfg = train_config(
        monkeypatch, osp.join(REPO, 'configs', 'synthetic',
                              'pretrain_base.py'),
        '--work-dir', str(tmp_path / 'work'), '--cfg-options',
        f'data_root={root}', 'train_cfg.max_iters=1',
        'train_dataloader.batch_size=2', 'model.backbone.arch.depth=1',
        'model.backbone.arch.hidden_size=32',
        'model.backbone.arch.num_heads=2')
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 1
    assert runner.model.backbone.y_embedder.sub2super.tolist() == [0, 1, 1]
    assert runner.train_dataloader.dataset.metainfo['taxonomy'][
        'names'] == ['red', 'disc', 'square']


def test_dumped_config_reloads_to_the_same(tmp_path):
    from finediffusion.config import load_config
    cfg = load_config(INAT, {'taxonomy.super_rank': 'order'})
    cfg.dump(str(tmp_path / 'dumped.py'))
    again = load_config(str(tmp_path / 'dumped.py'))
    assert again.to_dict() == cfg.to_dict()
    assert Config.fromfile(str(tmp_path / 'dumped.py')).model.backbone[
        'taxonomy']['super_rank'] == 'order'
