"""Duplicates in annotation files are refused, naming the id or path and
the file, for every format, through the shipped configs' datasets; paths
are compared as paths (``./a/b.jpg`` is ``a/b.jpg``). VegFru lists are
also refused for a label out of range or not in ASCII digits, and for a
subclass whose images lie in two folders (its name is its folder)."""
import json
import os.path as osp

import pytest
from mmengine.config import Config

from conftest import REPO
from mmagic.registry import DATASETS
from test_datasets import CATEGORIES, inat_json, write_image


def config_dataset(name, root, loader='train_dataloader', **overrides):
    """The dataset dict of a shipped config with its files in ``root``."""
    cfg = Config.fromfile(osp.join(REPO, 'configs', name))
    dataset = cfg[loader].dataset
    dataset.update(data_root=str(root), **overrides)
    return dataset


def edit_json(path, edit):
    with open(path) as f:
        data = json.load(f)
    edit(data)
    with open(path, 'w') as f:
        json.dump(data, f)


def _image_id(data):
    # The second image takes the first one's id, its annotation too: one
    # file would be dropped, the other used twice.
    data['images'][1]['id'] = data['annotations'][1]['image_id'] = 0


def _category_id(data):
    # Vanessa cardui (1) takes Danaus plexippus's id (0), its annotations
    # too: one species' images would be labelled as the other.
    data['categories'][2]['id'] = 0
    for ann in data['annotations']:
        if ann['category_id'] == 1:
            ann['category_id'] = 0


def _annotation_id(data):
    data['annotations'][1]['id'] = data['annotations'][0]['id']


def _file_name(data):
    data['images'][1]['file_name'] = data['images'][0]['file_name']


def _file_name_spelled(data):
    data['images'][1]['file_name'] = './' + data['images'][0]['file_name']


def _annotated_twice(data):
    # A robin's image also labelled as a monarch.
    first = data['annotations'][0]
    data['annotations'].append(dict(id=99, image_id=first['image_id'],
                                    category_id=0))


@pytest.mark.parametrize('edit,message', [
    (_image_id, r"two images share id 0 \(file_name "
     r"'train_mini/00002_Turdus_migratorius/0.jpg' and "
     r"'train_mini/00002_Turdus_migratorius/1.jpg'\)"),
    (_category_id, r"two categories share id 0 \(name 'Danaus plexippus' "
     r"and 'Vanessa cardui'\)"),
    (_annotation_id, r'two annotations share id 0'),
    (_file_name, r"two images share file_name "
     r"'train_mini/00002_Turdus_migratorius/0.jpg' \(id 0 and 1\)"),
    (_file_name_spelled, r"two images share file_name "
     r"'train_mini/00002_Turdus_migratorius/0.jpg' \(id 0 and 1, spelled "
     r"'./train_mini/00002_Turdus_migratorius/0.jpg' there\)"),
    (_annotated_twice, r'image id 0 \(train_mini/00002_Turdus_migratorius/'
     r'0.jpg\) is annotated twice: annotation 0 \(category id 2\) and '
     r'annotation 99 \(category id 0\)'),
], ids=['image id', 'category id', 'annotation id', 'file name',
        'file name spelled otherwise', 'image annotated twice'])
@pytest.mark.parametrize('loader,ann_file', [
    ('train_dataloader', 'train_mini.json'), ('test_dataloader', 'val.json')])
def test_inat_duplicates_are_refused(tmp_path, edit, message, loader,
                                     ann_file):
    inat_json(tmp_path, CATEGORIES, name=ann_file)
    edit_json(tmp_path / ann_file, edit)
    dataset = config_dataset('finediffusion_inat.py', tmp_path, loader)
    with pytest.raises(ValueError, match=f'{ann_file}: {message}'):
        DATASETS.build(dataset)


def write_vegfru(root, sub_lines, sup_lines):
    (root / 'vegfru_list').mkdir()
    for name, lines in (('vegfru_train.txt', sub_lines),
                        ('supvegfru_train.txt', sup_lines)):
        (root / 'vegfru_list' / name).write_text('\n'.join(lines) + '\n')
    for line in sub_lines:
        write_image(str(root / line.split()[0]))


VEG = ['veg/cabbage/1.jpg 0', 'veg/cabbage/3.jpg 0', 'veg/lettuce/2.jpg 1',
       'fru/apple/4.jpg 2']
SUP = ['veg/cabbage/1.jpg 0', 'veg/cabbage/3.jpg 0', 'veg/lettuce/2.jpg 0',
       'fru/apple/4.jpg 1']


@pytest.mark.parametrize('sub_lines,sup_lines,message', [
    # One path with two subclasses: the second label silently won.
    (VEG + ['veg/cabbage/1.jpg 1'], SUP,
     r'vegfru_train.txt:5: veg/cabbage/1.jpg is listed twice, with label 0 '
     r'on line 1 and 1 here'),
    (VEG, SUP + ['fru/apple/4.jpg 1'],
     r'supvegfru_train.txt:5: fru/apple/4.jpg is listed twice, with label 1 '
     r'on line 4 and 1 here'),
    # The same files spelled otherwise.
    (VEG + ['./veg/cabbage/1.jpg 1'], SUP,
     r'vegfru_train.txt:5: ./veg/cabbage/1.jpg is listed twice, with label '
     r'0 on line 1 \(as veg/cabbage/1.jpg\) and 1 here'),
    (VEG, SUP + ['fru//apple/4.jpg 1'],
     r'supvegfru_train.txt:5: fru//apple/4.jpg is listed twice, with label '
     r'1 on line 4 \(as fru/apple/4.jpg\) and 1 here'),
    # A negative label failed a training step later, naming no file.
    (VEG + ['veg/lettuce/5.jpg -1'], SUP + ['veg/lettuce/5.jpg 0'],
     r'vegfru_train.txt:5: label -1 of veg/lettuce/5.jpg is out of range: '
     r'labels are class ids from 0, each with an image, so below 5'),
    # So did a label past the class ids (reported as a gap, naming no line)
    # and one in other digits than ASCII (int() failed, or read it).
    (VEG + ['veg/kale/5.jpg 10'], SUP + ['veg/kale/5.jpg 0'],
     r'vegfru_train.txt:5: label 10 of veg/kale/5.jpg is out of range'),
    (VEG, SUP[:3] + ['fru/apple/4.jpg 4'],
     r'supvegfru_train.txt:4: label 4 of fru/apple/4.jpg is out of range'),
    (VEG + ['veg/kale/5.jpg \u00b3'], SUP + ['veg/kale/5.jpg 0'],
     r'vegfru_train.txt:5: expected "path label", got '
     r"'veg/kale/5.jpg \u00b3'"),
    (VEG + ['veg/kale/5.jpg \u0663'], SUP + ['veg/kale/5.jpg 0'],
     r'vegfru_train.txt:5: expected "path label"'),
    # A pear labelled as apple renamed subclass 2 'pear'.
    (VEG + ['fru/pear/5.jpg 2'], SUP + ['fru/pear/5.jpg 1'],
     r'vegfru_train.txt:5: subclass 2 has images in two folders, fru/apple/ '
     r'\(fru/apple/4.jpg, line 4\) and fru/pear/ \(fru/pear/5.jpg\)'),
], ids=['subclass list', 'superclass list', 'subclass list spelled',
        'superclass list spelled', 'negative label', 'label past the ids',
        'superclass label past the ids', 'superscript digit',
        'arabic-indic digit', 'two folders'])
def test_vegfru_lists_are_checked(tmp_path, sub_lines, sup_lines,
                                       message):
    write_vegfru(tmp_path, sub_lines, sup_lines)
    dataset = config_dataset('finediffusion_vegfru.py', tmp_path)
    with pytest.raises(ValueError, match=message):
        DATASETS.build(dataset)


CUB_ROWS = [
    ('images/001.Black_footed_Albatross/a.jpg', 'Black_footed_Albatross',
     'Diomedeidae'),
    ('images/010.Red_winged_Blackbird/b.jpg', 'Red_winged_Blackbird',
     'Icteridae'),
    ('images/011.Rusty_Blackbird/c.jpg', 'Rusty_Blackbird', 'Icteridae'),
]


@pytest.mark.parametrize('extra,message', [
    # The same image under two subclasses.
    (('images/010.Red_winged_Blackbird/b.jpg', 'Rusty_Blackbird',
      'Icteridae'),
     r"images/010.Red_winged_Blackbird/b.jpg is listed twice, as record 2 "
     r"\(subclass 'Red_winged_Blackbird'\) and record 4 \(subclass "
     r"'Rusty_Blackbird'\)"),
    # An exact repeat: the image would be drawn twice as often.
    (CUB_ROWS[0],
     r"images/001.Black_footed_Albatross/a.jpg is listed twice, as record 1 "
     r"\(subclass 'Black_footed_Albatross'\) and record 4"),
    # The same file spelled otherwise.
    (('./images/011.Rusty_Blackbird/c.jpg', 'Rusty_Blackbird', 'Icteridae'),
     r"images/011.Rusty_Blackbird/c.jpg is listed twice, as record 3 "
     r"\(subclass 'Rusty_Blackbird'\) and record 4 \(as "
     r"./images/011.Rusty_Blackbird/c.jpg\)"),
], ids=['two subclasses', 'exact repeat', 'spelled otherwise'])
@pytest.mark.parametrize('fmt', ['csv', 'json'])
def test_hierarchy_duplicates_are_refused(tmp_path, extra, message, fmt):
    rows = CUB_ROWS + [extra]
    ann_file = f'cub_families.{fmt}'
    with open(tmp_path / ann_file, 'w') as f:
        if fmt == 'csv':
            f.write('path,subclass,superclass\n')
            f.writelines(','.join(row) + '\n' for row in rows)
        else:
            json.dump([dict(path=p, subclass=s, superclass=g)
                       for p, s, g in rows], f)
    for path, _, _ in CUB_ROWS:
        write_image(str(tmp_path / path))
    dataset = config_dataset('finediffusion_cub200.py', tmp_path,
                             ann_file=ann_file)
    with pytest.raises(ValueError, match=f'{ann_file}: {message}'):
        DATASETS.build(dataset)
