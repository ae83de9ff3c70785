"""iNaturalist 2021 (train_mini.json / train.json / val.json, COCO style)."""
import json
import math
import os.path as osp
from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

from mmagic.registry import DATASETS
from ..taxonomy import Taxonomy
from .tiered_dataset import TieredImageDataset, path_key

RANKS = ('supercategory', 'kingdom', 'phylum', 'class', 'order', 'family',
         'genus')


@lru_cache(maxsize=2)
def _read_file(path: str, mtime: float) -> Tuple[list, list]:
    """Categories and (file name, category id) pairs, parsed once per
    process for the model and the dataset (``mtime`` keys the cache, so an
    edited file is read again)."""
    with open(path) as f:
        data = json.load(f)
    for key in ('images', 'annotations', 'categories'):
        if key not in data:
            raise ValueError(f'{path} is not an iNat 2021 annotation file: '
                             f'key {key!r} is missing')
    _refuse_duplicates(path, data)
    files = {image['id']: image['file_name'] for image in data['images']}
    pairs, labelled = [], {}
    for ann in data['annotations']:
        if ann['image_id'] not in files:
            raise ValueError(f'{path}: annotation {ann.get("id")} refers to '
                             f'image id {ann["image_id"]}, which is absent')
        # One label per image: a second annotation would train the image
        # twice, under two labels when they differ.
        if ann['image_id'] in labelled:
            first = labelled[ann['image_id']]
            raise ValueError(
                f'{path}: image id {ann["image_id"]} '
                f'({files[ann["image_id"]]}) is annotated twice: annotation '
                f'{first.get("id")} (category id {first["category_id"]}) '
                f'and annotation {ann.get("id")} (category id '
                f'{ann["category_id"]})')
        labelled[ann['image_id']] = ann
        pairs.append((files[ann['image_id']], ann['category_id']))
    return data['categories'], pairs


def _refuse_duplicates(path: str, data: dict) -> None:
    """Fails on an id (or image file) listed twice: a dict keyed by id
    would keep one entry and silently relabel or drop the other's images.
    File names are compared as paths (:func:`path_key`).

    Raises:
        ValueError: Naming the file, the id and both entries.
    """
    for key, field, shown in (('categories', 'id', 'name'),
                              ('images', 'id', 'file_name'),
                              ('images', 'file_name', 'id'),
                              ('annotations', 'id', 'image_id')):
        seen = {}
        for entry in data[key]:
            if field not in entry:
                continue  # annotation ids are optional in COCO files
            value = entry[field]
            first = seen.setdefault(
                path_key(value) if field == 'file_name' else value, entry)
            if first is not entry:
                spelled = ('' if first[field] == value else
                           f', spelled {value!r} there')
                raise ValueError(
                    f'{path}: two {key} share {field} {first[field]!r} '
                    f'({shown} {first.get(shown)!r} and '
                    f'{entry.get(shown)!r}{spelled})')


def read_inat(ann_file: str,
              super_rank: str = 'supercategory',
              ranks: Optional[Sequence[str]] = None) -> Tuple[Taxonomy, List]:
    """The taxonomy and samples of an iNat file: ancestors at ``ranks``
    (finest first, the last the superclass), or two tiers with the
    superclass at ``super_rank``."""
    if not ranks and super_rank not in RANKS:
        raise ValueError(f'super_rank must be one of {RANKS}, got '
                         f'{super_rank!r}')
    chosen = list(ranks) if ranks else [super_rank]
    unknown = [r for r in chosen if r not in RANKS]
    if unknown or len(set(chosen)) != len(chosen):
        raise ValueError(f'ranks must be distinct ones of {RANKS}, got '
                         f'{chosen}')
    categories, pairs = _read_file(ann_file, osp.getmtime(ann_file))
    categories = sorted(categories, key=lambda c: c['id'])
    sub_of = {c['id']: i for i, c in enumerate(categories)}

    def value(category, rank):
        value = category.get(rank)
        blank = value is None or value == '' or (isinstance(value, float)
                                                  and math.isnan(value))
        return None if blank else str(value)

    lineages = [tuple(value(c, r) for r in chosen) for c in categories]
    for k, rank in enumerate(chosen):
        gaps = [sub_of[c['id']] for c, line in zip(categories, lineages)
                if line[k] is None]
        if gaps:
            what = ' (superclass)' if k == len(chosen) - 1 else ''
            raise ValueError(f'{ann_file}: subclasses without a {rank}'
                             f'{what}: ids {gaps[:20]}')
    taxonomy = Taxonomy.from_lineages(
        [c['name'] for c in categories], lineages,
        chosen if ranks else (),
        [c.get('common_name') or '' for c in categories])
    unknown = next((c for _, c in pairs if c not in sub_of), None)
    if unknown is not None:
        raise ValueError(f'{ann_file}: annotations use category id '
                         f'{unknown}, absent from categories')
    return taxonomy, [(path, sub_of[c]) for path, c in pairs]


@DATASETS.register_module()
class INat2021Dataset(TieredImageDataset):
    """iNaturalist 2021 with the ancestors of each subclass at chosen ranks.

    Args:
        ann_file (str): ``train_mini.json``, ``train.json`` or ``val.json``.
        data_root (str): The folder holding the annotation file and the
            image folders the file names are relative to.
        super_rank (str): For two tiers, the rank used as superclass:
            'supercategory' (11 groups, the paper's), 'kingdom', 'phylum',
            'class', 'order', 'family' or 'genus'.
        ranks (Sequence[str], optional): Ranks of a deeper taxonomy, finest
            first, the last the superclass, e.g. ``('genus', 'family',
            'supercategory')``; replaces ``super_rank``.
        **kwargs: Passed to MMEngine's ``BaseDataset`` (pipeline, ...).
    """

    def __init__(self, ann_file: str, data_root: str = '',
                 super_rank: str = 'supercategory',
                 ranks: Optional[Sequence[str]] = None, **kwargs) -> None:
        self.super_rank = super_rank
        self.ranks = ranks
        super().__init__(ann_file=ann_file, data_root=data_root, **kwargs)

    @classmethod
    def read_taxonomy(cls, ann_file: str, data_root: str = '',
                      super_rank: str = 'supercategory',
                      ranks: Optional[Sequence[str]] = None,
                      **_) -> Taxonomy:
        """The taxonomy of a dataset spec (the arguments above), from its
        annotation file alone (see :func:`finediffusion.taxonomy.read_taxonomy`).
        """
        return read_inat(osp.join(data_root, ann_file), super_rank, ranks)[0]

    def read(self):
        return read_inat(self.ann_file, self.super_rank, self.ranks)
