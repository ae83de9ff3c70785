"""Datasets, transforms and data generators of FineDiffusion.

Imported on first use of MMagic's ``DATASETS`` or ``TRANSFORMS`` registry
(see :mod:`finediffusion`), or directly.
"""
from ..taxonomy import Taxonomy, read_taxonomy, taxonomy_of
from ..engine.collate import stack_collate
from .hierarchy import HierarchyDataset
from .inat2021 import INat2021Dataset
from .latent_dataset import LatentDataset
from .synthetic import write_toy_hierarchy
from .transforms import (ADMCenterCrop, LoadLatent, LoadRGBImage,
                         LoadTieredImage, PickLatentFlip)
from .vegfru import VegFruDataset

__all__ = [
    'ADMCenterCrop', 'HierarchyDataset', 'INat2021Dataset', 'LatentDataset',
    'LoadLatent', 'LoadRGBImage', 'LoadTieredImage', 'PickLatentFlip',
    'Taxonomy', 'VegFruDataset', 'read_taxonomy', 'stack_collate',
    'taxonomy_of', 'write_toy_hierarchy'
]
