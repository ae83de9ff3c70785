"""Training samples from a latent cache (tools/cache_latents.py)."""
import os.path as osp
from typing import List

from mmengine.dataset import BaseDataset

from mmagic.registry import DATASETS
from .latent_cache import MANIFEST, as_label, read_manifest, rows_of
from ..taxonomy import Taxonomy


@DATASETS.register_module()
class LatentDataset(BaseDataset):
    """The images of a latent cache, as VAE posterior statistics.

    Each sample gives ``latent_path`` and ``latent_row`` (read by
    :class:`LoadLatent`), ``gt_label`` and ``super_label``; the taxonomy of
    the encoded dataset is in ``metainfo`` as for image datasets.

    Args:
        cache_dir (str): The cache folder.
        **kwargs: Passed to MMEngine's ``BaseDataset`` (pipeline, ...).
    """

    def __init__(self, cache_dir: str, **kwargs) -> None:
        self.cache_dir = cache_dir
        super().__init__(**kwargs)

    @classmethod
    def read_taxonomy(cls, cache_dir: str, **_) -> Taxonomy:
        """The taxonomy of the dataset the cache was made from, from its
        manifest (see :func:`finediffusion.taxonomy.read_taxonomy`)."""
        return Taxonomy.from_dict(read_manifest(cache_dir)['taxonomy'])

    def load_data_list(self) -> List[dict]:
        manifest = read_manifest(self.cache_dir)
        taxonomy = Taxonomy.from_dict(manifest['taxonomy'])
        self._metainfo.update(taxonomy=taxonomy.to_dict(),
                              classes=tuple(taxonomy.names))
        return [
            dict(latent_path=osp.join(self.cache_dir, name), latent_row=row,
                 gt_label=as_label(label),
                 super_label=taxonomy.sub2super[label])
            for name, row, label in rows_of(self.cache_dir, manifest)
        ]

    def get_cat_ids(self, idx: int) -> List[int]:
        return [int(self.get_data_info(idx)['gt_label'][0])]

    def taxonomy_source(self) -> str:
        """The manifest holding the taxonomy, for messages."""
        return f'LatentDataset({osp.join(self.cache_dir, MANIFEST)})'
