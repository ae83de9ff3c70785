"""Any image set with a taxonomy of one or more ranks:
root/<superclass>/<subclass>/*.jpg (or deeper, one folder per rank), or a
CSV or JSON annotation file with path, subclass and ancestor columns."""
import csv
import json
import os
import os.path as osp
from typing import List, Optional, Sequence, Tuple

from mmagic.registry import DATASETS
from ..taxonomy import Taxonomy
from .tiered_dataset import TieredImageDataset, first_duplicate, path_key

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


# A sample of a hierarchy: (path, subclass, ancestors from the finest rank
# to the superclass).
Row = Tuple[str, str, Tuple[str, ...]]


def _scan_folders(root: str, depth: int) -> List[Row]:
    """Images at root/<ancestor>/.../<subclass>/, ``depth`` ancestor
    folders from the superclass down."""
    rows = []

    def walk(folder: str, lineage: Tuple[str, ...]) -> None:
        for name in _entries(folder):
            path = osp.join(folder, name)
            if len(lineage) < depth + 1:
                if osp.isdir(path):
                    walk(path, lineage + (name, ))
            elif name.lower().endswith(IMAGE_EXTENSIONS):
                *ancestors, sub = lineage
                rows.append(('/'.join(lineage + (name, )), sub,
                             tuple(reversed(ancestors))))

    walk(root, ())
    if not rows:
        levels = '/'.join(['<superclass>'] + ['<rank>'] * (depth - 1))
        raise ValueError(f'no image in {root}/{levels}/<subclass>/')
    return rows


def _read_annotations(path: str, columns: Sequence[str]) -> List[Row]:
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
               tuple(str(record.get(c) or '') for c in columns))
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
                   ann_file: Optional[str] = None,
                   ranks: Sequence[str] = (),
                   taxonomy_file: Optional[str] = None
                   ) -> Tuple[Taxonomy, List]:
    """Subclass ids follow (lineage, subclass) name order, coarse to fine,
    so that the subclasses of an ancestor are adjacent.

    Args:
        data_root (str): The folders, or what the annotation paths are
            relative to.
        ann_file (str, optional): A CSV or JSON annotation file.
        ranks (Sequence[str]): Ancestor ranks, finest first; empty for two
            tiers (a ``superclass`` column or folder level).
        taxonomy_file (str, optional): A saved taxonomy whose ids the
            samples take (see :func:`_fixed_ids`).

    Raises:
        ValueError: For no image, a subclass without an ancestor at a rank,
            or a subclass (or ancestor) under two different parents; with
            ``taxonomy_file``, a subclass it lacks or places elsewhere.
    """
    columns = list(ranks) or ['superclass']
    rows = (_read_annotations(ann_file, columns) if ann_file else
            _scan_folders(data_root, len(columns)))
    for k, column in enumerate(columns):
        orphans = sorted({sub for _, sub, line in rows if not line[k]})
        if orphans:
            what = 'superclass' if column == columns[-1] else column
            raise ValueError(f'{ann_file or data_root}: subclasses without '
                             f'a {what}: {orphans[:20]}')
    clash = first_duplicate((sub, line) for _, sub, line in rows)
    if clash:
        raise ValueError(
            f'subclass {clash[0]!r} appears under '
            f'{"superclasses" if len(columns) == 1 else "ancestors"} '
            f'{_shown(clash[1])} and {_shown(clash[2])}')
    if taxonomy_file:
        return _fixed_ids(taxonomy_file, ranks, rows)
    pairs = sorted({(tuple(reversed(line)), sub) for _, sub, line in rows})
    sub_ids = {sub: i for i, (_, sub) in enumerate(pairs)}
    taxonomy = Taxonomy.from_lineages(
        [sub for _, sub in pairs],
        [tuple(reversed(path)) for path, _ in pairs], ranks)
    return taxonomy, [(path, sub_ids[sub]) for path, sub, _ in rows]


def _fixed_ids(taxonomy_file: str, ranks: Sequence[str],
               rows: List[Row]) -> Tuple[Taxonomy, List]:
    """The taxonomy saved in ``taxonomy_file`` and the samples labelled
    with its ids.

    Raises:
        ValueError: For other ranks than ``ranks``, or an annotated
            subclass the file lacks or gives other ancestors, naming it.
    """
    with open(taxonomy_file) as f:
        taxonomy = Taxonomy.from_dict(json.load(f))
    if taxonomy.ranks != list(ranks):
        raise ValueError(f'{taxonomy_file} has ranks {taxonomy.ranks}, the '
                         f'dataset {list(ranks)}')
    ids = {name: i for i, name in enumerate(taxonomy.names)}
    for _, sub, line in rows:
        if sub not in ids:
            raise ValueError(f'subclass {sub!r} is not in {taxonomy_file}')
        if taxonomy.lineage(ids[sub]) != line:
            raise ValueError(
                f'subclass {sub!r} is under {_shown(line)} in the data but '
                f'under {_shown(taxonomy.lineage(ids[sub]))} in '
                f'{taxonomy_file}')
    return taxonomy, [(path, ids[sub]) for path, sub, _ in rows]


def _shown(lineage: Tuple[str, ...]) -> str:
    """Ancestors from the finest, as a message shows them: 'a' or 'a < b'."""
    return repr(lineage[0]) if len(lineage) == 1 else repr(' < '.join(lineage))


@DATASETS.register_module()
class HierarchyDataset(TieredImageDataset):
    """An image set with a taxonomy of any depth, in folders or described
    by an annotation file.

    Args:
        data_root (str): ``<superclass>/<subclass>/*.jpg`` folders (with
            ``ranks``, one folder level per rank from the coarsest, e.g.
            ``<family>/<genus>/<species>/*.jpg``), or the folder the
            annotation file's paths are relative to.
        ann_file (str, optional): A CSV (header ``path,subclass,superclass``,
            or ``path,subclass`` and one column per rank) or a JSON list of
            such records. Defaults to the folders.
        ranks (Sequence[str]): The ancestor ranks, finest first, the last
            the superclass (e.g. ``('genus', 'family')``); empty for two
            tiers. Defaults to ().
        taxonomy_file (str, optional): A saved taxonomy (the JSON of
            ``Taxonomy.to_dict``, as ``tools/add_species.py`` writes) that
            fixes the ids, instead of name order; every annotated subclass
            must be in it with the same ancestors. Defaults to None.
        **kwargs: Passed to MMEngine's ``BaseDataset``.
    """

    def __init__(self, data_root: str, ann_file: Optional[str] = None,
                 ranks: Sequence[str] = (),
                 taxonomy_file: Optional[str] = None, **kwargs) -> None:
        self.ranks = tuple(ranks)
        self.taxonomy_file = taxonomy_file
        super().__init__(data_root=data_root, ann_file=ann_file or '',
                         **kwargs)

    @classmethod
    def read_taxonomy(cls, data_root: str, ann_file: Optional[str] = None,
                      ranks: Sequence[str] = (),
                      taxonomy_file: Optional[str] = None,
                      **_) -> Taxonomy:
        """The taxonomy of a dataset spec, from its folders or annotation
        file alone (see :func:`finediffusion.taxonomy.read_taxonomy`)."""
        path = osp.join(data_root, ann_file) if ann_file else None
        return read_hierarchy(data_root, path, tuple(ranks),
                              taxonomy_file)[0]

    def read(self):
        return read_hierarchy(self.data_root, self.ann_file or None,
                              self.ranks, self.taxonomy_file)
