"""Resuming exactly: the checkpoint to resume from and restored random
states (checkpoints are written atomically: see
:func:`finediffusion.compat.fix_runner`)."""
import glob
import os
import os.path as osp
import random
import re
from typing import Optional, Sequence, Union

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.runner import Runner

from mmagic.registry import HOOKS

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
        # The state of this process's device only: the one it draws noise
        # on. Resumed where a process sees other devices (or fewer), it
        # still has a device to put it on.
        state['cuda'] = torch.cuda.get_rng_state()
    return state


def saved_cuda_state(saved: Union[torch.Tensor, Sequence[torch.Tensor]],
                     rank: int) -> Optional[torch.Tensor]:
    """The CUDA random state a rank saved for the device it drew on.

    Args:
        saved (Tensor or sequence of Tensor): A rank's ``'cuda'`` entry: one
            device's state (a uint8 tensor), or, in checkpoints of earlier
            versions, the states of every device the process saw
            (``torch.cuda.get_rng_state_all()``).
        rank (int): The rank that saved it.

    Returns:
        Tensor or None: The state (uint8, on the CPU); for a list, the entry
        of device ``rank % len(list)``, the device of that rank in a launch
        of one process per visible GPU (torchrun's); None for an empty list.
    """
    if isinstance(saved, torch.Tensor):
        return saved.cpu()
    states = list(saved)
    return states[rank % len(states)].cpu() if states else None


def _set_random_state(state: dict, rank: int) -> None:
    # Resuming maps a checkpoint's tensors to the GPU; RNG states are
    # CPU byte tensors.
    torch.set_rng_state(state['torch'].cpu())
    np.random.set_state(state['numpy'])
    random.setstate(state['python'])
    _set_cuda_random_state(state.get('cuda'), rank)


def _set_cuda_random_state(saved, rank: int) -> None:
    """Restores a rank's saved CUDA state to this process's current device,
    or warns why it does not apply."""
    if saved is None:
        if torch.cuda.is_available():
            print_log(
                f'rank {rank}: the checkpoint holds no CUDA random state '
                '(saved without a GPU): the draws on the GPU start from the '
                'seed, not where the saved run stopped', 'current', level=30)
        return
    legacy = not isinstance(saved, torch.Tensor)
    held = (f'the CUDA random states of {len(saved)} devices (a checkpoint '
            'of an earlier version)' if legacy else 'a CUDA random state')
    state = saved_cuda_state(saved, rank)
    if state is None or not torch.cuda.is_available():
        why = 'none' if state is None else 'this process has no GPU'
        print_log(
            f'rank {rank}: the checkpoint holds {held}; {why}: not '
            'restored (the torch CPU, NumPy and Python states are)',
            'current', level=30)
        return
    torch.cuda.set_rng_state(state)  # the current device
    if legacy:
        print_log(
            f'rank {rank}: the checkpoint holds {held}; restored that of '
            f'device {rank % len(saved)}, the one rank {rank} drew on, to '
            f'cuda:{torch.cuda.current_device()}', 'current')


@HOOKS.register_module()
class ResumeRandomStateHook(Hook):
    """Saves every rank's random state with each checkpoint and restores it
    on resume, so that the resumed run draws the same label dropout,
    timesteps and noise as an uninterrupted one (the data order and the
    augmentations continue through ``ResumableInfiniteSampler``).

    Each rank restores its own state. The CUDA state is that of the
    process's device, restored to its current device, so a run may resume
    where each process sees other or fewer GPUs; a state that cannot apply
    (no GPU here, or a checkpoint of another world size, whose ranks hold
    other data) is not restored, with a warning naming it.

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
            _set_random_state(self.pending[get_rank()], get_rank())
        else:
            print_log(f'the checkpoint holds the random states of '
                      f'{len(self.pending)} ranks, this run has '
                      f'{runner.world_size} ranks: not restored (each rank '
                      'draws timesteps, noise and label dropout from the '
                      'seed; the data stream continues where the saved run '
                      'stopped)', 'current', level=30)
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
