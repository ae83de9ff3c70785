"""Base of the image datasets with a two-tier taxonomy."""
import os.path as osp
from typing import List, Optional

import numpy as np
from mmengine.dataset import BaseDataset

from ..taxonomy import Taxonomy


class TieredImageDataset(BaseDataset):
    """Images with a subclass label, and the taxonomy in ``metainfo``.

    Subclasses implement :meth:`read` (the taxonomy and the samples from
    the dataset's own files). Each sample holds ``gt_path``, ``gt_label``
    (the subclass id, as a 1-element array: MMagic's conditional samplers
    turn a plain int into a tensor of that length) and ``super_label``.
    ``metainfo['taxonomy']`` is the class-name table; MMEngine saves the
    metainfo with every checkpoint, so tools resolve names without the data.
    """

    def read(self):
        """Returns (Taxonomy, list of (relative path, subclass id))."""
        raise NotImplementedError

    def load_data_list(self) -> List[dict]:
        taxonomy, samples = self.read()
        self._metainfo.update(
            taxonomy=taxonomy.to_dict(), classes=tuple(taxonomy.names))
        self.taxonomy: Taxonomy = taxonomy
        root = self.data_root or ''
        return [
            dict(gt_path=osp.join(root, path),
                 gt_label=np.array([sub], dtype=np.int64),
                 super_label=taxonomy.sub2super[sub])
            for path, sub in samples
        ]

    def get_cat_ids(self, idx: int) -> List[int]:
        return [int(self.get_data_info(idx)['gt_label'][0])]

    def taxonomy_source(self) -> str:
        """The files the taxonomy is read from, for messages."""
        return f'{type(self).__name__}({self.ann_file or self.data_root})'


def index_names(names) -> dict:
    """Sorted unique names to ids."""
    return {name: i for i, name in enumerate(sorted(set(names)))}


def path_key(path: str) -> str:
    """The key under which annotation files compare image paths: spellings
    of one file (``./a/b.jpg``, ``a//b.jpg``, ``a/c/../b.jpg``) are one
    key, so that a duplicate check does not miss them."""
    return osp.normpath(path)


def first_duplicate(pairs) -> Optional[tuple]:
    """The first key mapped to two different values in (key, value) pairs,
    as (key, value, other value)."""
    seen = {}
    for key, value in pairs:
        if seen.setdefault(key, value) != value:
            return key, seen[key], value
    return None
