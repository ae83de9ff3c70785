"""Runner-side parts of FineDiffusion: hooks and the optimizer constructor."""
from .hooks import PEFTFreezeHook, TrainableEMAHook
from .optimizer import PEFTOptimWrapperConstructor

__all__ = ['PEFTFreezeHook', 'PEFTOptimWrapperConstructor', 'TrainableEMAHook']
