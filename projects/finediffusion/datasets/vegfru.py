"""VegFru: vegfru_list/{vegfru,supvegfru}_<split>.txt label lists."""
import os.path as osp
import re
from typing import Dict, List, NamedTuple, Tuple

from mmagic.registry import DATASETS
from ..taxonomy import Taxonomy
from .tiered_dataset import TieredImageDataset, first_duplicate, path_key


class _Entry(NamedTuple):
    """One line of a list: the label, the line number and the path as
    spelled there."""
    label: int
    line: int
    path: str


def _read_list(path: str) -> Dict[str, _Entry]:
    """The entries of a list by image path (:func:`path_key`).

    Raises:
        ValueError: Naming the file and line, for a line that is not
            "path label" (the label in ASCII digits), a label out of range
            (labels are dense class ids from 0, each with an image, so a
            list of N lines holds ids below N: a negative or larger one
            would fail a training step naming no file), or a path listed
            twice (kept once it would drop a label, or count the image
            twice), also when spelled differently.
    """
    with open(path) as f:
        lines = [(number, line.split()) for number, line in enumerate(f, 1)
                 if line.strip()]
    entries = {}
    for number, parts in lines:
        if len(parts) != 2 or not re.fullmatch(r'-?[0-9]+', parts[1]):
            raise ValueError(f'{path}:{number}: expected "path label", '
                             f'got {" ".join(parts)!r}')
        label = int(parts[1])
        if not 0 <= label < len(lines):
            raise ValueError(
                f'{path}:{number}: label {parts[1]} of {parts[0]} is out of '
                f'range: labels are class ids from 0, each with an image, '
                f'so below {len(lines)} in a list of {len(lines)} images')
        first = entries.get(path_key(parts[0]))
        if first:
            spelled = '' if first.path == parts[0] else f' (as {first.path})'
            raise ValueError(
                f'{path}:{number}: {parts[0]} is listed twice, with label '
                f'{first.label} on line {first.line}{spelled} and {label} '
                'here')
        entries[path_key(parts[0])] = _Entry(label, number, parts[0])
    return entries


def _subclass_names(sub_file: str, subs: Dict[str, _Entry]) -> Dict[int, str]:
    """Subclass names are the image folders (veg200_images/<name>/...).

    Raises:
        ValueError: When a subclass has images in two folders: one would
            silently name it (and go into checkpoints and sampling).
    """
    folders = {}
    for key, entry in subs.items():
        folder = osp.dirname(key)
        first_folder, first = folders.setdefault(entry.label, (folder, entry))
        if first_folder != folder:
            raise ValueError(
                f'{sub_file}:{entry.line}: subclass {entry.label} has images '
                f'in two folders, {first_folder}/ '
                f'({first.path}, line {first.line}) and {folder}/ '
                f'({entry.path}); its name is its folder')
    return {label: osp.basename(folder) or str(label)
            for label, (folder, _) in folders.items()}


def read_vegfru(data_root: str, split: str = 'train') -> Tuple[Taxonomy, List]:
    """Joins the subclass and superclass lists of a split by path."""
    sub_file = osp.join(data_root, 'vegfru_list', f'vegfru_{split}.txt')
    sup_file = osp.join(data_root, 'vegfru_list', f'supvegfru_{split}.txt')
    subs, sups = _read_list(sub_file), _read_list(sup_file)
    missing = sorted(subs[p].path for p in set(subs) - set(sups))
    if missing:
        raise ValueError(f'{sup_file} lacks the superclass of {len(missing)}'
                         f' images listed in {sub_file}, e.g. {missing[:3]}')
    clash = first_duplicate((subs[p].label, sups[p].label) for p in subs)
    if clash:
        raise ValueError(f'subclass {clash[0]} has images in superclasses '
                         f'{clash[1]} and {clash[2]} ({sup_file})')
    sub2super = dict((subs[p].label, sups[p].label) for p in subs)
    num = max(sub2super) + 1
    gaps = sorted(set(range(num)) - set(sub2super))
    if gaps:
        raise ValueError(f'{sub_file}: no image of subclasses {gaps[:20]}, '
                         'so their superclass is unknown')
    names = _subclass_names(sub_file, subs)
    num_super = max(sub2super.values()) + 1
    taxonomy = Taxonomy(
        names=[names[i] for i in range(num)],
        sub2super=[sub2super[i] for i in range(num)],
        super_names=[f'superclass {k}' for k in range(num_super)])
    return taxonomy, sorted((p, entry.label) for p, entry in subs.items())


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

    @classmethod
    def read_taxonomy(cls, data_root: str, split: str = 'train',
                      **_) -> Taxonomy:
        """The taxonomy of a dataset spec, from its split's lists alone
        (see :func:`finediffusion.taxonomy.read_taxonomy`)."""
        return read_vegfru(data_root, split)[0]

    def read(self):
        return read_vegfru(self.data_root, self.split)

    def taxonomy_source(self) -> str:
        lists = osp.join(self.data_root, 'vegfru_list')
        return (f'VegFruDataset({lists}/vegfru_{self.split}.txt, '
                f'supvegfru_{self.split}.txt)')
