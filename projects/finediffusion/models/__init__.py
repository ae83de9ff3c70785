"""Models of FineDiffusion, registered into MMagic's registries."""
from .data_preprocessor import DiTDataPreprocessor, TieredDataPreprocessor
from .dit_diffusion import DiTDiffusion
from .finediffusion import FineDiffusion
from .guidance import FineGrainedCFG, TieredGuidance
from .tiered_dit import TieredDiT
from .tiered_embedder import TieredEmbedder

__all__ = [
    'DiTDataPreprocessor', 'DiTDiffusion', 'FineDiffusion', 'FineGrainedCFG',
    'TieredDataPreprocessor', 'TieredDiT', 'TieredEmbedder', 'TieredGuidance'
]
