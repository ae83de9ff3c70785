"""Datasets built from small fixtures in the real formats, bad inputs, and
DiT's center crop."""
import csv
import json
import math
import os

import numpy as np
import pytest
from mmengine.runner import Runner
from PIL import Image

from mmagic.registry import DATASETS

PIPELINE = [
    dict(type='LoadRGBImage', key='gt', max_failures=3),
    dict(type='ADMCenterCrop', size=16),
    dict(type='Flip', keys=['gt'], direction='horizontal'),
    dict(type='PackInputs', keys='gt'),
]


def write_image(path, size=(24, 20), mode='RGB', color=(200, 30, 30)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.new('RGB', size, color)
    image.convert(mode).save(path)


def inat_json(root, categories, images_per_category=2, name='train_mini.json'):
    """An iNat 2021 annotation file and its images."""
    images, annotations = [], []
    for cat in categories:
        for k in range(images_per_category):
            image_id = len(images)
            file_name = f'train_mini/{cat["image_dir_name"]}/{k}.jpg'
            write_image(str(root / file_name))
            images.append(dict(id=image_id, file_name=file_name, width=24,
                               height=20, latitude=math.nan,
                               longitude=math.nan))
            annotations.append(dict(id=image_id, image_id=image_id,
                                    category_id=cat['id']))
    with open(root / name, 'w') as f:
        json.dump(dict(images=images, annotations=annotations,
                       categories=categories), f)


def category(id_, name, common, supercategory, family):
    return dict(id=id_, name=name, common_name=common,
                supercategory=supercategory, kingdom='Animalia',
                phylum='Chordata', **{'class': 'X'}, order='O', family=family,
                genus=name.split()[0], specific_epithet=name.split()[1],
                image_dir_name=f'{id_:05d}_{name.replace(" ", "_")}')


CATEGORIES = [
    category(2, 'Turdus migratorius', 'American Robin', 'Birds', 'Turdidae'),
    category(0, 'Danaus plexippus', 'Monarch', 'Insects', 'Nymphalidae'),
    category(1, 'Vanessa cardui', 'Painted Lady', 'Insects', 'Nymphalidae'),
]


def test_inat2021(tmp_path):
    inat_json(tmp_path, CATEGORIES)
    ds = DATASETS.build(dict(type='INat2021Dataset', data_root=str(tmp_path),
                             ann_file='train_mini.json', pipeline=PIPELINE))
    tax = ds.metainfo['taxonomy']
    assert tax['names'] == ['Danaus plexippus', 'Vanessa cardui',
                            'Turdus migratorius']
    assert tax['common_names'][2] == 'American Robin'
    assert tax['super_names'] == ['Birds', 'Insects']
    assert tax['sub2super'] == [1, 1, 0]
    assert len(ds) == 6
    info = ds.get_data_info(0)
    assert info['gt_path'].endswith('00002_Turdus_migratorius/0.jpg')
    assert info['gt_label'].tolist() == [2] and info['super_label'] == 0
    item = ds[0]
    assert item['inputs'].shape == (3, 16, 16)
    by_family = DATASETS.build(dict(
        type='INat2021Dataset', data_root=str(tmp_path),
        ann_file='train_mini.json', super_rank='family'))
    assert by_family.metainfo['taxonomy']['super_names'] == [
        'Nymphalidae', 'Turdidae']


def test_inat_taxonomy_gap_names_the_ids(tmp_path):
    gap = [dict(c) for c in CATEGORIES]
    gap[1]['supercategory'] = ''
    inat_json(tmp_path, gap)
    with pytest.raises(ValueError, match=r'without a supercategory.*\[0\]'):
        DATASETS.build(dict(type='INat2021Dataset', data_root=str(tmp_path),
                            ann_file='train_mini.json'))


def vegfru(root, rows, sup_rows=None):
    os.makedirs(root / 'vegfru_list', exist_ok=True)
    with open(root / 'vegfru_list' / 'vegfru_train.txt', 'w') as f:
        f.writelines(f'{p} {label}\n' for p, label, _ in rows)
    with open(root / 'vegfru_list' / 'supvegfru_train.txt', 'w') as f:
        f.writelines(f'{p} {sup}\n' for p, _, sup in (sup_rows or rows))
    for path, _, _ in rows:
        write_image(str(root / path))


def test_vegfru(tmp_path):
    rows = [('veg200_images/cabbage/1.jpg', 0, 1),
            ('fru92_images/apple/2.jpg', 1, 0),
            ('veg200_images/cabbage/3.jpg', 0, 1)]
    vegfru(tmp_path, rows)
    ds = DATASETS.build(dict(type='VegFruDataset', data_root=str(tmp_path),
                             pipeline=PIPELINE))
    tax = ds.metainfo['taxonomy']
    assert tax['names'] == ['cabbage', 'apple']
    assert tax['sub2super'] == [1, 0]
    assert len(ds) == 3 and ds[0]['inputs'].shape == (3, 16, 16)


def test_vegfru_bad_lists(tmp_path):
    rows = [('veg/a/1.jpg', 0, 0), ('veg/a/2.jpg', 0, 1)]
    vegfru(tmp_path, rows)
    with pytest.raises(ValueError, match='subclass 0 has images in '
                       'superclasses 0 and 1'):
        DATASETS.build(dict(type='VegFruDataset', data_root=str(tmp_path)))
    vegfru(tmp_path, rows, sup_rows=rows[:1])
    with pytest.raises(ValueError, match=r'lacks the superclass.*veg/a/2.jpg'):
        DATASETS.build(dict(type='VegFruDataset', data_root=str(tmp_path)))


def test_hierarchy_folders_csv_and_json(tmp_path):
    for path in ('insects/monarch/a.jpg', 'insects/admiral/b.png',
                 'birds/robin/c.jpg'):
        write_image(str(tmp_path / path))
    folders = DATASETS.build(dict(type='HierarchyDataset',
                                  data_root=str(tmp_path), pipeline=PIPELINE))
    tax = folders.metainfo['taxonomy']
    assert tax['names'] == ['robin', 'admiral', 'monarch']
    assert tax['super_names'] == ['birds', 'insects']
    assert tax['sub2super'] == [0, 1, 1]
    assert folders[0]['inputs'].shape == (3, 16, 16)

    records = [dict(path='insects/monarch/a.jpg', subclass='monarch',
                    superclass='insects'),
               dict(path='birds/robin/c.jpg', subclass='robin',
                    superclass='birds')]
    with open(tmp_path / 'ann.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, ['path', 'subclass', 'superclass'])
        writer.writeheader()
        writer.writerows(records)
    with open(tmp_path / 'ann.json', 'w') as f:
        json.dump(records, f)
    for ann in ('ann.csv', 'ann.json'):
        ds = DATASETS.build(dict(type='HierarchyDataset',
                                 data_root=str(tmp_path), ann_file=ann))
        assert ds.metainfo['taxonomy']['names'] == ['robin', 'monarch']
        assert [ds.get_data_info(i)['gt_label'][0]
                for i in range(len(ds))] == [1, 0]

    records.append(dict(path='x/y.jpg', subclass='moth', superclass=''))
    with open(tmp_path / 'gap.json', 'w') as f:
        json.dump(records, f)
    with pytest.raises(ValueError, match=r"without a superclass: \['moth'\]"):
        DATASETS.build(dict(type='HierarchyDataset', data_root=str(tmp_path),
                            ann_file='gap.json'))


def test_hidden_and_system_files_are_not_samples(tmp_path):
    """What macOS, Windows, Jupyter and NAS systems leave in folders: an
    AppleDouble companion ends like an image (``._a.jpg``), and an unzipped
    archive's ``__MACOSX`` mirrors the class folders."""
    for path in ('insects/monarch/a.jpg', 'insects/monarch/b.jpg',
                 'birds/robin/c.png'):
        write_image(str(tmp_path / path))
    junk = ['insects/monarch/._a.jpg', 'insects/monarch/._b.jpg',
            'insects/monarch/.DS_Store', 'insects/monarch/Thumbs.db',
            'insects/.DS_Store', '.DS_Store', 'birds/robin/desktop.ini',
            '__MACOSX/insects/monarch/._a.jpg', '__MACOSX/birds/._robin',
            'insects/.hidden/x.jpg', 'birds/robin/@eaDir/c.png',
            '.Trashes/old/x.jpg']
    for path in junk:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b'\x00\x05\x16\x07 AppleDouble')
    write_image(str(tmp_path / 'birds/robin/.ipynb_checkpoints/c.png'))
    ds = DATASETS.build(dict(type='HierarchyDataset',
                             data_root=str(tmp_path), pipeline=PIPELINE))
    assert len(ds) == 3
    assert [ds.get_data_info(i)['gt_path'] for i in range(3)] == [
        str(tmp_path / p) for p in ('birds/robin/c.png',
                                    'insects/monarch/a.jpg',
                                    'insects/monarch/b.jpg')]
    assert ds.metainfo['taxonomy']['names'] == ['robin', 'monarch']
    assert ds.metainfo['taxonomy']['super_names'] == ['birds', 'insects']


def reference_center_crop(pil_image, image_size):
    """ADM's center_crop_arr, from its description in the ADM/DiT papers'
    code release: box-halve, bicubic resize of the short side, center cut."""
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(
            tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(
        tuple(round(x * scale) for x in pil_image.size),
        resample=Image.BICUBIC)
    arr = np.array(pil_image)
    y = (arr.shape[0] - image_size) // 2
    x = (arr.shape[1] - image_size) // 2
    return arr[y:y + image_size, x:x + image_size]


@pytest.mark.parametrize('size', [(700, 530), (300, 1000), (100, 90)])
def test_adm_center_crop(size):
    from finediffusion.datasets import ADMCenterCrop
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = ADMCenterCrop(256)(dict(gt=array.copy()))['gt']
    assert out.shape == (256, 256, 3)
    assert np.array_equal(out, reference_center_crop(Image.fromarray(array),
                                                     256))


def test_odd_images_are_converted(tmp_path):
    from finediffusion.datasets import LoadTieredImage
    load = LoadTieredImage()
    for mode in ('L', 'CMYK', 'P'):
        path = str(tmp_path / f'{mode}.{"jpg" if mode == "CMYK" else "png"}')
        write_image(path, mode=mode)
        assert load(dict(gt_path=path))['gt'].shape == (20, 24, 3)
    rgba = Image.new('RGBA', (4, 4), (0, 0, 0, 0))
    rgba.save(tmp_path / 'clear.png')
    # Fully transparent pixels come out white, not black.
    assert load(dict(gt_path=str(tmp_path / 'clear.png')))['gt'].min() == 255


def test_missing_file_is_skipped_with_its_name(tmp_path):
    from finediffusion.datasets import LoadTieredImage
    load = LoadTieredImage(max_failures=1)
    missing = str(tmp_path / 'gone.jpg')
    assert load(dict(gt_path=missing)) is None
    assert load(dict(gt_path=missing)) is None  # counted once
    assert load.failures == [missing]
    with pytest.raises(RuntimeError, match='gone.jpg.*other.jpg'):
        load(dict(gt_path=str(tmp_path / 'other.jpg')))


def test_bad_files_are_skipped_and_training_goes_on(tiny_cfg, tmp_path):
    root = tmp_path / 'data'
    for k in range(4):
        write_image(str(root / 'shapes' / 'square' / f'{k}.png'))
        write_image(str(root / 'shapes' / 'disc' / f'{k}.png'),
                    color=(10, 10, 200))
    (root / 'shapes' / 'disc' / 'broken.png').write_bytes(b'not an image')
    write_image(str(root / 'shapes' / 'disc' / 'tiny.png'), size=(5, 7))
    cfg = tiny_cfg.copy()
    cfg.model.backbone.num_classes = None
    cfg.model.backbone.taxonomy = dict(type='HierarchyDataset',
                                        data_root=str(root))
    cfg.train_dataloader.dataset = dict(type='HierarchyDataset',
                                        data_root=str(root),
                                        pipeline=PIPELINE)
    cfg.train_cfg.max_iters = 6
    cfg.experiment_name = 'bad_files'
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 6
    load, crop = runner.train_dataloader.dataset.pipeline.transforms[:2]
    assert load.failures == [str(root / 'shapes' / 'disc' / 'broken.png')]
    assert crop.upscaled >= 1  # tiny.png, 5 x 7 px, upscaled to 16
    # The class-name table travels with the checkpoint.
    import torch
    meta = torch.load(os.path.join(cfg.work_dir, 'iter_6.pth'))['meta']
    assert meta['dataset_meta']['taxonomy']['names'] == ['disc', 'square']

    # Past max_failures the run stops, naming the files.
    for k in range(4):
        (root / 'shapes' / 'square' / f'{k}.png').write_bytes(b'broken')
    cfg.experiment_name = 'too_many'
    cfg.work_dir = str(tmp_path / 'second')
    with pytest.raises(RuntimeError, match=r'failed to load, more than '
                       r'max_failures=3: \[.*\.png'):
        Runner.from_cfg(cfg).train()


def test_taxonomy_mismatch_between_model_and_data_is_refused(tiny_cfg,
                                                             tmp_path):
    for sub in ('a', 'b', 'c'):
        write_image(str(tmp_path / 'sup' / sub / '0.png'))
    cfg = tiny_cfg.copy()  # the model keeps its 4-class table
    cfg.train_dataloader.dataset = dict(type='HierarchyDataset',
                                        data_root=str(tmp_path),
                                        pipeline=PIPELINE)
    with pytest.raises(ValueError, match=r"subclass 'c' \(id 2\) belongs to "
                       r'superclass id 1 in the model.* but to superclass '
                       r"'sup' \(id 0\) in the train_dataloader dataset "
                       r'HierarchyDataset'):
        Runner.from_cfg(cfg).train()
