"""Models of FineDiffusion, registered into MMagic's registries."""
from .data_preprocessor import TieredDataPreprocessor
from .dit_diffusion import DiTDiffusion
from .finediffusion import FineDiffusion
from .guidance import FineGrainedCFG
from .tiered_dit import TieredDiT
from .tiered_embedder import TieredEmbedder

__all__ = [
    'DiTDiffusion', 'FineDiffusion', 'FineGrainedCFG', 'TieredDiT',
    'TieredDataPreprocessor', 'TieredEmbedder'
]
