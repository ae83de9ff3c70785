"""Distributed runs on machines without GPUs (the gloo backend)."""
import torch
from mmengine.config import Config


def use_cpu_distributed(cfg: Config) -> None:
    """Lets ``launcher='pytorch'`` run on a CPU-only machine, over gloo.

    MMEngine's ``init_dist`` calls ``torch.cuda.set_device`` and its DDP
    wrapper pins CUDA device ids. Without a GPU, the process group is started
    here (the Runner then finds it initialized) and DDP gets no device ids.
    Call before building the Runner, in each process torchrun starts.
    """
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group('gloo')
    cfg.env_cfg.dist_cfg = dict(backend='gloo')
    cfg.model_wrapper_cfg = dict(
        type='MMDistributedDataParallel', device_ids=None,
        broadcast_buffers=False)


def end_distributed() -> None:
    """Destroys the default process group, if any, before the interpreter
    exits: MMEngine's Runner leaves it open, torch then warns, and a gloo
    rank's threads may die with the interpreter (a rank of a 2-process CPU
    run aborted once with "terminate called without an active exception")."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
