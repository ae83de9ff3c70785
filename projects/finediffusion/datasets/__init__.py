"""Datasets, taxonomies and data generators of FineDiffusion."""
from .taxonomy import Taxonomy, taxonomy_of
from .toy_hierarchy import write_toy_hierarchy

__all__ = ['Taxonomy', 'taxonomy_of', 'write_toy_hierarchy']
