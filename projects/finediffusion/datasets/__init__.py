"""Datasets and data generators of FineDiffusion."""
from .toy_hierarchy import write_toy_hierarchy

__all__ = ['write_toy_hierarchy']
