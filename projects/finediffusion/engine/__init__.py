"""Runner-side parts of FineDiffusion: hooks, the optimizer constructor,
exact resumption (the training loop, its sampler, random states) and
CPU-only distributed runs, throughput measurement, one training run per
work dir."""
from .collate import stack_collate
from .hooks import PEFTCheckpointHook, PEFTFreezeHook, TrainableEMAHook
from .loops import ResumableIterBasedTrainLoop
from .nonfinite import (FiniteAmpOptimWrapper, FiniteOptimWrapper,
                        FiniteStepMixin, NonFiniteError)
from .optimizer import PEFTOptimWrapperConstructor
from .resume import ResumeRandomStateHook, latest_checkpoint
from .sampler import ResumableInfiniteSampler, SampleIndex
from .throughput import FullEMAHook, ThroughputHook
from .work_dir_lock import WorkDirInUseError, hold_work_dir

__all__ = [
    'FiniteAmpOptimWrapper', 'FiniteOptimWrapper', 'FiniteStepMixin',
    'FullEMAHook', 'NonFiniteError', 'PEFTCheckpointHook', 'PEFTFreezeHook',
    'PEFTOptimWrapperConstructor', 'ResumableInfiniteSampler',
    'ResumableIterBasedTrainLoop', 'ResumeRandomStateHook', 'SampleIndex',
    'ThroughputHook', 'TrainableEMAHook', 'WorkDirInUseError',
    'hold_work_dir', 'latest_checkpoint', 'stack_collate'
]
