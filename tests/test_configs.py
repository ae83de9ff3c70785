"""Every config loads; the small ones build; the paper's config builds
DiT-XL/2 on the meta device with the 1.773% trainable share."""
import glob
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from conftest import REPO
from mmagic.registry import DATASETS, MODELS
from test_datasets import CATEGORIES, inat_json, vegfru

CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', '**', '*.py'),
                           recursive=True))


@pytest.mark.parametrize('path', CONFIGS,
                         ids=[osp.relpath(p, REPO) for p in CONFIGS])
def test_config_loads(path):
    cfg = Config.fromfile(path)
    if 'model' in cfg and cfg.model.get('type'):
        # The demo's judge is an mmpretrain classifier, configs/mmagic/
        # holds an MMagic GAN; every other model config is a FineDiffusion.
        if cfg.get('default_scope') == 'mmpretrain':
            expected = 'ImageClassifier'
        elif osp.basename(osp.dirname(path)) == 'mmagic' and \
                'sngan' in osp.basename(path):
            expected = 'SNGAN'
        else:
            expected = 'FineDiffusion'
        assert cfg.model.type == expected


def test_inheritance_is_at_most_three_levels():
    def depth(path):
        with open(path) as f:
            text = f.read()
        cfg_dir = osp.dirname(path)
        parents = Config._get_base_files(path) if '_base_' in text else []
        # A package's config ('mmagic::...') counts as one level.
        return 1 + max((1 if '::' in p else depth(osp.join(cfg_dir, p))
                        for p in parents),
                       default=0)

    assert max(depth(p) for p in CONFIGS) <= 3


def test_tiny_config_builds(tiny_cfg):
    model = MODELS.build(tiny_cfg.model)
    dataset = DATASETS.build(tiny_cfg.train_dataloader.dataset)
    assert len(dataset) == 32 and model.backbone.y_embedder.num_classes == 4


def xl_on_meta(cfg):
    """The config's model, DiT-XL/2 shapes, no weights read or allocated."""
    cfg.model.vae = None
    cfg.model.backbone.pretrained = None
    with torch.device('meta'):
        return MODELS.build(cfg.model)


def trainable_share(model):
    params = dict(model.backbone.named_parameters())
    count = sum(params[n].numel() for n in model.trainable)
    return count, sum(p.numel() for p in params.values())


def test_paper_config_on_inat_format_taxonomy(tmp_path):
    # 10,000 species in 11 supercategories, as iNat 2021 mini (no images
    # needed to build the model).
    supers = [f'Group{k}' for k in range(11)]
    categories = [dict(id=i, name=f'Genus{i} species{i}', common_name='',
                       supercategory=supers[i % 11],
                       image_dir_name=f'{i:05d}') for i in range(10000)]
    with open(tmp_path / 'train_mini.json', 'w') as f:
        json.dump(dict(images=[], annotations=[], categories=categories), f)
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'finediffusion_inat.py'))
    cfg.model.backbone.taxonomy.data_root = str(tmp_path)
    model = xl_on_meta(cfg)
    assert model.backbone.y_embedder.embedding_table.num_embeddings == 10011
    count, total = trainable_share(model)
    assert (count, total) == (12_153_632, 685_640_480)
    assert f'{100 * count / total:.3f}' == '1.773'
    assert cfg.train_dataloader.batch_size == 32
    assert cfg.optim_wrapper.optimizer.lr == 1e-4
    assert cfg.model.ema_decay == 0.9999
    assert cfg.model.guidance.scale == 4.0


def test_ranks_config_on_inat_format_taxonomy(tmp_path):
    # iNat 2021 mini's counts at each rank: 10,000 species in 4,884 genera,
    # 1,103 families and 11 supercategories, nested.
    categories = [
        dict(id=i, name=f'Genus{i % 4884} species{i}', common_name='',
             genus=f'Genus{i % 4884}', family=f'Family{i % 4884 % 1103}',
             supercategory=f'Group{i % 4884 % 1103 % 11}',
             image_dir_name=f'{i:05d}') for i in range(10000)
    ]
    with open(tmp_path / 'train_mini.json', 'w') as f:
        json.dump(dict(images=[], annotations=[], categories=categories), f)
    cfg = Config.fromfile(
        osp.join(REPO, 'configs', 'finediffusion_inat_ranks.py'))
    cfg.model.backbone.taxonomy.data_root = str(tmp_path)
    model = xl_on_meta(cfg)
    embedder = model.backbone.y_embedder
    assert embedder.embedding_table.num_embeddings == 15998
    assert (embedder.ranks, embedder.rank_sizes) == (['genus', 'family'],
                                                     [4884, 1103])
    count, total = trainable_share(model)
    assert (count, total) == (19_050_656, 692_537_504)
    assert f'{100 * count / total:.3f}' == '2.751'


@pytest.mark.parametrize('name,trainable', [
    ('finediffusion_inat_full.py', 'full'),
    ('finediffusion_inat_bitfit.py', ['y_embedder.*', '*.bias']),
    ('finediffusion_inat_difffit.py', 'difffit'),
])
def test_baselines_and_datasets_build(tmp_path, name, trainable):
    inat_json(tmp_path, CATEGORIES)
    cfg = Config.fromfile(osp.join(REPO, 'configs', name))
    cfg.model.backbone.taxonomy.data_root = str(tmp_path)
    cfg.train_dataloader.dataset.data_root = str(tmp_path)
    model = xl_on_meta(cfg)
    assert cfg.model.trainable == trainable
    # Every baseline trains the new class table.
    assert 'y_embedder.embedding_table.weight' in model.trainable
    assert model.backbone.y_embedder.embedding_table.num_embeddings == 3 + 2
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    assert dataset.metainfo['taxonomy']['sub2super'] == [1, 1, 0]
    assert dataset[0]['inputs'].shape == (3, 256, 256)


def test_vegfru_and_512_configs_build(tmp_path):
    vegfru(tmp_path, [('veg/cabbage/1.jpg', 0, 1), ('fru/apple/2.jpg', 1, 0)])
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'finediffusion_vegfru.py'))
    cfg.model.backbone.taxonomy.data_root = str(tmp_path)
    cfg.train_dataloader.dataset.data_root = str(tmp_path)
    assert xl_on_meta(cfg).backbone.grid == (16, 16)
    assert len(DATASETS.build(cfg.train_dataloader.dataset)) == 2

    inat_json(tmp_path, CATEGORIES)
    cfg = Config.fromfile(
        osp.join(REPO, 'configs', 'finediffusion_inat_512.py'))
    cfg.model.backbone.taxonomy.data_root = str(tmp_path)
    cfg.train_dataloader.dataset.data_root = str(tmp_path)
    assert xl_on_meta(cfg).backbone.grid == (32, 32)
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    assert dataset[0]['inputs'].shape == (3, 512, 512)


def test_dataset_added_by_inheritance(tmp_path):
    """The README's example: CUB-200 with families, from a CSV."""
    rows = [('images/001.Black_footed_Albatross/a.jpg', 'Black_footed_Albatross',
             'Diomedeidae'),
            ('images/010.Red_winged_Blackbird/b.jpg', 'Red_winged_Blackbird',
             'Icteridae'),
            ('images/011.Rusty_Blackbird/c.jpg', 'Rusty_Blackbird',
             'Icteridae')]
    with open(tmp_path / 'cub_families.csv', 'w') as f:
        f.write('path,subclass,superclass\n')
        f.writelines(','.join(row) + '\n' for row in rows)
    from test_datasets import write_image
    for path, _, _ in rows:
        write_image(str(tmp_path / path))
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'finediffusion_cub200.py'))
    cfg.model.backbone.taxonomy.data_root = str(tmp_path)
    cfg.train_dataloader.dataset.data_root = str(tmp_path)
    model = xl_on_meta(cfg)
    assert model.backbone.y_embedder.sub2super.tolist() == [0, 1, 1]
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    assert dataset.metainfo['taxonomy']['super_names'] == [
        'Diomedeidae', 'Icteridae']
    assert dataset[0]['inputs'].shape == (3, 256, 256)
