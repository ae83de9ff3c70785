"""Any two-tier image set: root/<superclass>/<subclass>/*.jpg, or a CSV or
JSON annotation file with path, subclass and superclass columns."""
import csv
import json
import os
import os.path as osp
from typing import List, Optional, Tuple

from mmagic.registry import DATASETS
from ..taxonomy import Taxonomy
from .tiered_dataset import (TieredImageDataset, first_duplicate, index_names,
                             path_key)

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')


# Entries that file managers, archivers and NAS systems leave in folders:
# macOS's AppleDouble companions (``._photo.jpg``, which ends like an image)
# and other dot-files and folders, and Windows' and Synology's.
SYSTEM_NAMES = ('__macosx', 'thumbs.db', 'desktop.ini', '@eadir',
                '$recycle.bin', 'system volume information')


def is_hidden(name: str) -> bool:
    """Whether a folder entry is a hidden or system file or folder, not
    data: a dot-name (``.DS_Store``, ``._a.jpg``, ``.ipynb_checkpoints``) or
    one of :data:`SYSTEM_NAMES` (any case)."""
    return name.startswith('.') or name.casefold() in SYSTEM_NAMES


def _entries(folder: str) -> List[str]:
    """The names in a folder, sorted, without hidden and system entries."""
    return sorted(n for n in os.listdir(folder) if not is_hidden(n))


def _scan_folders(root: str) -> List[Tuple[str, str, str]]:
    rows = []
    for sup in _entries(root):
        if not osp.isdir(osp.join(root, sup)):
            continue
        for sub in _entries(osp.join(root, sup)):
            folder = osp.join(root, sup, sub)
            if not osp.isdir(folder):
                continue
            for name in _entries(folder):
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    rows.append((f'{sup}/{sub}/{name}', sub, sup))
    if not rows:
        raise ValueError(f'no image in {root}/<superclass>/<subclass>/')
    return rows


def _read_annotations(path: str) -> List[Tuple[str, str, str]]:
    if path.endswith('.json'):
        with open(path) as f:
            records = json.load(f)
    else:
        with open(path, newline='') as f:
            records = list(csv.DictReader(f))
    rows, numbers = [], {}
    for number, record in enumerate(records, 1):
        missing = [k for k in ('path', 'subclass') if not record.get(k)]
        if missing:
            raise ValueError(f'{path}: record {number} lacks {missing}')
        row = (record['path'], str(record['subclass']),
               str(record.get('superclass') or ''))
        # Even an exact repeat: the image would be trained twice as often.
        key = path_key(row[0])
        if key in numbers:
            first = rows[numbers[key] - 1]
            spelled = '' if first[0] == row[0] else f' (as {row[0]})'
            raise ValueError(
                f'{path}: {first[0]} is listed twice, as record '
                f'{numbers[key]} (subclass {first[1]!r}) and record '
                f'{number}{spelled} (subclass {row[1]!r})')
        numbers[key] = number
        rows.append(row)
    return rows


def read_hierarchy(data_root: str,
                   ann_file: Optional[str] = None) -> Tuple[Taxonomy, List]:
    """Subclass ids follow (superclass, subclass) name order, so that the
    subclasses of a superclass are adjacent."""
    rows = (_read_annotations(ann_file) if ann_file else
            _scan_folders(data_root))
    orphans = sorted({sub for _, sub, sup in rows if not sup})
    if orphans:
        raise ValueError(f'{ann_file or data_root}: subclasses without a '
                         f'superclass: {orphans[:20]}')
    clash = first_duplicate((sub, sup) for _, sub, sup in rows)
    if clash:
        raise ValueError(f'subclass {clash[0]!r} appears under superclasses '
                         f'{clash[1]!r} and {clash[2]!r}')
    pairs = sorted({(sup, sub) for _, sub, sup in rows})
    sub_ids = {sub: i for i, (_, sub) in enumerate(pairs)}
    super_ids = index_names(sup for sup, _ in pairs)
    taxonomy = Taxonomy(
        names=[sub for _, sub in pairs],
        sub2super=[super_ids[sup] for sup, _ in pairs],
        super_names=sorted(super_ids, key=super_ids.get))
    return taxonomy, [(path, sub_ids[sub]) for path, sub, _ in rows]


@DATASETS.register_module()
class HierarchyDataset(TieredImageDataset):
    """A two-tier image set in folders or described by an annotation file.

    Args:
        data_root (str): ``<superclass>/<subclass>/*.jpg`` folders, or the
            folder the annotation file's paths are relative to.
        ann_file (str, optional): A CSV (header ``path,subclass,superclass``)
            or a JSON list of such records. Defaults to the folders.
        **kwargs: Passed to MMEngine's ``BaseDataset``.
    """

    def __init__(self, data_root: str, ann_file: Optional[str] = None,
                 **kwargs) -> None:
        super().__init__(data_root=data_root, ann_file=ann_file or '',
                         **kwargs)

    @classmethod
    def read_taxonomy(cls, data_root: str, ann_file: Optional[str] = None,
                      **_) -> Taxonomy:
        """The taxonomy of a dataset spec, from its folders or annotation
        file alone (see :func:`finediffusion.taxonomy.read_taxonomy`)."""
        path = osp.join(data_root, ann_file) if ann_file else None
        return read_hierarchy(data_root, path)[0]

    def read(self):
        return read_hierarchy(self.data_root, self.ann_file or None)
