"""VegFru: vegfru_list/{vegfru,supvegfru}_<split>.txt label lists."""
import os.path as osp
from typing import Dict, List, Tuple

from mmagic.registry import DATASETS
from .taxonomy import Taxonomy, taxonomy_reader
from .tiered_dataset import TieredImageDataset, first_duplicate


def _read_list(path: str) -> Dict[str, int]:
    """Labels by image path; a path listed twice is refused, with both
    lines (kept once it would drop a label, or count the image twice)."""
    labels, lines = {}, {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[1].lstrip('-').isdigit():
                raise ValueError(f'{path}:{number}: expected "path label", '
                                 f'got {line.strip()!r}')
            if parts[0] in labels:
                raise ValueError(
                    f'{path}:{number}: {parts[0]} is listed twice, with '
                    f'label {labels[parts[0]]} on line {lines[parts[0]]} '
                    f'and {parts[1]} here')
            labels[parts[0]], lines[parts[0]] = int(parts[1]), number
    return labels


def read_vegfru(data_root: str, split: str = 'train') -> Tuple[Taxonomy, List]:
    """Joins the subclass and superclass lists of a split by path."""
    sub_file = osp.join(data_root, 'vegfru_list', f'vegfru_{split}.txt')
    sup_file = osp.join(data_root, 'vegfru_list', f'supvegfru_{split}.txt')
    subs, sups = _read_list(sub_file), _read_list(sup_file)
    missing = sorted(set(subs) - set(sups))
    if missing:
        raise ValueError(f'{sup_file} lacks the superclass of {len(missing)}'
                         f' images listed in {sub_file}, e.g. {missing[:3]}')
    clash = first_duplicate((subs[p], sups[p]) for p in subs)
    if clash:
        raise ValueError(f'subclass {clash[0]} has images in superclasses '
                         f'{clash[1]} and {clash[2]} ({sup_file})')
    sub2super = dict((subs[p], sups[p]) for p in subs)
    num = max(sub2super) + 1
    gaps = sorted(set(range(num)) - set(sub2super))
    if gaps:
        raise ValueError(f'{sub_file}: no image of subclasses {gaps[:20]}, '
                         'so their superclass is unknown')
    # Subclass names are the image folders (veg200_images/<name>/...).
    names = {subs[p]: osp.basename(osp.dirname(p)) or str(subs[p])
             for p in subs}
    num_super = max(sub2super.values()) + 1
    taxonomy = Taxonomy(
        names=[names[i] for i in range(num)],
        sub2super=[sub2super[i] for i in range(num)],
        super_names=[f'superclass {k}' for k in range(num_super)])
    return taxonomy, sorted(subs.items())


@taxonomy_reader('VegFruDataset')
def vegfru_taxonomy(data_root: str, split: str = 'train', **_) -> Taxonomy:
    return read_vegfru(data_root, split)[0]


@DATASETS.register_module()
class VegFruDataset(TieredImageDataset):
    """VegFru (292 subclasses in 25 superclasses).

    Args:
        data_root (str): The folder holding ``vegfru_list/`` and the image
            folders the lists' paths are relative to.
        split (str): 'train', 'val', 'trainval' or 'test'.
        **kwargs: Passed to MMEngine's ``BaseDataset``.
    """

    def __init__(self, data_root: str, split: str = 'train',
                 **kwargs) -> None:
        self.split = split
        super().__init__(data_root=data_root, **kwargs)

    def read(self):
        return read_vegfru(self.data_root, self.split)

    def taxonomy_source(self) -> str:
        lists = osp.join(self.data_root, 'vegfru_list')
        return (f'VegFruDataset({lists}/vegfru_{self.split}.txt, '
                f'supvegfru_{self.split}.txt)')
