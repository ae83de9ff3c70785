"""Datasets, taxonomies, transforms and data generators of FineDiffusion."""
from .collate import stack_collate
from .hierarchy import HierarchyDataset
from .inat2021 import INat2021Dataset
from .latent_dataset import LatentDataset
from .synthetic import write_toy_hierarchy
from .taxonomy import Taxonomy, load_taxonomy, taxonomy_of
from .transforms import (ADMCenterCrop, LoadLatent, LoadTieredImage,
                         PickLatentFlip)
from .vegfru import VegFruDataset

__all__ = [
    'ADMCenterCrop', 'HierarchyDataset', 'INat2021Dataset', 'LatentDataset',
    'LoadLatent', 'LoadTieredImage', 'PickLatentFlip', 'Taxonomy',
    'VegFruDataset', 'load_taxonomy', 'stack_collate', 'taxonomy_of',
    'write_toy_hierarchy'
]
