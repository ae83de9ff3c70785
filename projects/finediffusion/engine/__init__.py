"""Runner-side parts of FineDiffusion: hooks, the optimizer constructor,
exact resumption and CPU-only distributed runs."""
from .hooks import PEFTFreezeHook, TrainableEMAHook
from .nonfinite import (FiniteAmpOptimWrapper, FiniteOptimWrapper,
                        FiniteStepMixin, NonFiniteError)
from .optimizer import PEFTOptimWrapperConstructor
from .resume import ResumeRandomStateHook, latest_checkpoint

__all__ = [
    'FiniteAmpOptimWrapper', 'FiniteOptimWrapper', 'FiniteStepMixin',
    'NonFiniteError', 'PEFTFreezeHook', 'PEFTOptimWrapperConstructor',
    'ResumeRandomStateHook', 'TrainableEMAHook', 'latest_checkpoint'
]
