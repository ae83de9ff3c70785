"""Fast sampling through diffusers' schedulers (DDIM, DPM-Solver++, ...).

Any scheduler in MMagic's ``DIFFUSION_SCHEDULERS`` registry (MMagic registers
every diffusers scheduler under its class name) runs on DiT's training
schedule; only the epsilon channels of the model output are used.
"""
import inspect
from typing import Callable, Optional

import torch
from torch import Tensor

from mmagic.registry import DIFFUSION_SCHEDULERS

# DiT's training schedule, in diffusers' terms.
DIT_SCHEDULE = dict(
    num_train_timesteps=1000,
    beta_schedule='linear',
    beta_start=1e-4,
    beta_end=0.02)


def build_solver(cfg: dict):
    """A diffusers scheduler on DiT's schedule, e.g.
    ``dict(type='DPMSolverMultistepScheduler')``."""
    return DIFFUSION_SCHEDULERS.build(dict(DIT_SCHEDULE, **cfg))


@torch.no_grad()
def solver_sample_loop(scheduler,
                       model_fn: Callable[[Tensor, Tensor], Tensor],
                       noise: Tensor,
                       steps: int,
                       generator: Optional[torch.Generator] = None,
                       progress: bool = False) -> Tensor:
    """Integrates from ``noise`` to x0 in ``steps`` scheduler steps.

    Args:
        scheduler: A diffusers scheduler (see :func:`build_solver`).
        model_fn (callable): Maps (x_t, model timesteps) to the model output,
            epsilon first along the channels.
        noise (Tensor): Standard normal x_T.
        steps (int): Number of solver steps.
        generator (torch.Generator, optional): For stochastic schedulers.
        progress (bool): Show a progress bar.

    Returns:
        Tensor: The sample x0.
    """
    scheduler.set_timesteps(steps, device=noise.device)
    takes_generator = 'generator' in inspect.signature(
        scheduler.step).parameters
    extra = dict(generator=generator) if takes_generator else {}
    x = noise * scheduler.init_noise_sigma
    timesteps = scheduler.timesteps
    if progress:
        from tqdm import tqdm
        timesteps = tqdm(timesteps, desc='sampling', leave=False)
    for t in timesteps:
        model_in = scheduler.scale_model_input(x, t)
        eps = model_fn(model_in, t.expand(len(x)).to(x.device))[:, :x.shape[1]]
        x = scheduler.step(eps, t, x, **extra).prev_sample
    return x
