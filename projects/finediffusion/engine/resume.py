"""Resuming exactly: whole checkpoint files and restored random states."""
import glob
import os
import os.path as osp
import random
import re
from typing import Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.runner import Runner
from mmengine.runner import runner as mmengine_runner

from mmagic.registry import HOOKS

_save_checkpoint = mmengine_runner.save_checkpoint


def _atomic_save_checkpoint(checkpoint: dict, filename: str, *args,
                            **kwargs) -> None:
    """MMEngine's save_checkpoint, writing ``<file>.partial`` then renaming.

    A run killed while writing leaves the previous checkpoints and a
    ``.partial`` file, never a truncated checkpoint under a real name.
    """
    if '://' in str(filename):  # remote backends keep their own semantics
        return _save_checkpoint(checkpoint, filename, *args, **kwargs)
    partial = f'{filename}.partial'
    _save_checkpoint(checkpoint, partial, *args, **kwargs)
    os.replace(partial, filename)


# The Runner calls the name it imported; every run of the plugin writes
# checkpoints atomically.
mmengine_runner.save_checkpoint = _atomic_save_checkpoint


def latest_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint to resume: MMEngine's ``last_checkpoint`` pointer if
    it names an existing file, else the highest ``iter_N.pth`` (the pointer
    is rewritten after each save and a kill can leave it empty)."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if named and osp.isfile(named):
            return named
    numbered = [(int(m.group(1)), path)
                for path in glob.glob(osp.join(work_dir, 'iter_*.pth'))
                if (m := re.search(r'iter_(\d+)\.pth$', path))]
    return max(numbered)[1] if numbered else None


def _random_state() -> dict:
    state = dict(torch=torch.get_rng_state(), numpy=np.random.get_state(),
                 python=random.getstate())
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def _set_random_state(state: dict) -> None:
    # Resuming maps a checkpoint's tensors to the GPU; RNG states are
    # CPU byte tensors.
    torch.set_rng_state(state['torch'].cpu())
    np.random.set_state(state['numpy'])
    random.setstate(state['python'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state['cuda']])


@HOOKS.register_module()
class ResumeRandomStateHook(Hook):
    """Saves every rank's random state with each checkpoint and restores it
    on resume, so that the resumed run draws the same label dropout,
    timesteps and noise as an uninterrupted one (the data order continues
    through MMEngine's sampler; augmentations repeat exactly when the data
    loader has workers, which MMEngine seeds).

    Checkpoints are written by rank 0 alone: the ranks' states are gathered
    at the iterations where the CheckpointHook saves.
    """

    # After the EMA update, before the CheckpointHook (VERY_LOW).
    priority = 'LOW'

    def __init__(self) -> None:
        self.states: Optional[list] = None
        self.pending: Optional[list] = None

    def before_train(self, runner: Runner) -> None:
        self.saver = next((hook for hook in runner.hooks
                           if isinstance(hook, CheckpointHook)), None)
        if self.pending is None:
            return
        if len(self.pending) == runner.world_size:
            _set_random_state(self.pending[get_rank()])
        else:
            print_log(f'the checkpoint holds random states of '
                      f'{len(self.pending)} ranks, this run has '
                      f'{runner.world_size}: not restored', 'current',
                      level=30)
        self.pending = None

    def after_train_iter(self, runner: Runner, batch_idx: int,
                         data_batch=None, outputs=None) -> None:
        saver = self.saver
        if saver is None or saver.by_epoch:
            return
        if (self.every_n_train_iters(runner, saver.interval)
                or (saver.save_last and self.is_last_train_iter(runner))):
            self.states = all_gather_object(_random_state())

    def before_save_checkpoint(self, runner: Runner, checkpoint: dict) -> None:
        if self.states is not None:
            checkpoint['meta']['random_states'] = self.states

    def after_load_checkpoint(self, runner: Runner, checkpoint: dict) -> None:
        if runner._resume and 'random_states' in checkpoint.get('meta', {}):
            self.pending = checkpoint['meta']['random_states']
