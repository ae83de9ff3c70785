"""Samplers of a FineDiffusion: one interface over ADM's respaced DDPM
(DiT's reference sampler) and diffusers' schedulers set to DiT's process.

A sampler is built once per call by :func:`build_sampler` from a
``scheduler`` config (None: respaced DDPM) and ``num_sampling_steps``, and
maps a model function and x_T to x_0.

diffusers' schedulers default to other models' processes: ``DDIMScheduler``
clips the predicted x0 to [-1, 1] (DiT's latents have unit variance, about
30% of their values lie beyond 1), ``PNDMScheduler`` ends at alpha_bar[0]
instead of 1, ``HeunDiscreteScheduler`` has Stable Diffusion's betas, and so
on. :func:`build_scheduler` therefore sets every option of a supported
scheduler explicitly, to DiT's process and to the sampling grid its tests
compare with a reference sampler (``tests/test_solvers.py``), and refuses a
config that asks for anything else.
"""
import inspect
from typing import Callable, Dict, Optional, Union

import torch
from diffusers import __version__ as diffusers_version_string
from torch import Tensor

from mmagic.registry import DIFFUSION_SCHEDULERS
from .dit_diffusion import DiTDiffusion

# Maps (x_t, model timesteps (N, )) to the model output (N, C or 2C, H, W):
# epsilon, then the variance values when the model learns them.
ModelFn = Callable[[Tensor, Tensor], Tensor]

# DiT's diffusion (ADM's GaussianDiffusion as DiT trains it). Each option is
# set where the scheduler has it.
DIT_PROCESS = dict(
    num_train_timesteps=1000,
    beta_schedule='linear',
    beta_start=1e-4,
    beta_end=0.02,
    trained_betas=None,
    prediction_type='epsilon',
    # DiT never clips nor thresholds its (unit-variance) latents.
    clip_sample=False,
    thresholding=False,
    # The trained schedule, not one rescaled to zero terminal SNR.
    rescale_betas_zero_snr=False,
    # The model's own noise levels at its integer steps, linearly
    # interpolated between them, not Karras' or Lu's respaced levels.
    use_karras_sigmas=False,
    use_lu_lambdas=False,
    interpolation_type='linear',
    timestep_type='discrete',
    sigma_min=None,
    sigma_max=None,
    steps_offset=0,
)

# The sampling grid and solver of each supported scheduler; tests compare
# each with a reference written from its paper at these settings.
SCHEDULER_SETTINGS: Dict[str, dict] = {
    # DDIM (Song et al., 2021, eta = 0) on ADM's 'ddimN' grid:
    # range(0, 1000, 1000 // N), the last step to alpha_bar = 1.
    'DDIMScheduler': dict(timestep_spacing='leading', set_alpha_to_one=True),
    # DPM-Solver++(2M) (Lu et al., 2022): first and last steps first order,
    # N steps from 999 (np.linspace(0, 999, N + 1), rounded, 0 left out) to
    # sigma = 0; the model's variance channels are not used.
    'DPMSolverMultistepScheduler': dict(
        algorithm_type='dpmsolver++',
        solver_order=2,
        solver_type='midpoint',
        lower_order_final=True,
        euler_at_final=False,
        final_sigmas_type='zero',
        lambda_min_clipped=-float('inf'),
        variance_type=None,
        timestep_spacing='linspace'),
    # UniPC (Zhao et al., 2023): second-order predictor and corrector in
    # data prediction with B(h) = e^h - 1, on DPM-Solver++'s grid.
    'UniPCMultistepScheduler': dict(
        solver_order=2,
        predict_x0=True,
        solver_type='bh2',
        lower_order_final=True,
        disable_corrector=(),
        solver_p=None,
        final_sigmas_type='zero',
        timestep_spacing='linspace'),
    # DEIS (Zhang & Chen, 2023), second order, epsilon interpolated in
    # log rho, the same grid, ending at the noise level of step 0.
    'DEISMultistepScheduler': dict(
        solver_order=2,
        algorithm_type='deis',
        solver_type='logrho',
        lower_order_final=True,
        timestep_spacing='linspace'),
    # Karras et al. (2022) Euler, Euler-ancestral and Heun on the
    # probability-flow ODE: N times np.linspace(0, 999, N), then sigma = 0.
    'EulerDiscreteScheduler': dict(
        timestep_spacing='linspace', final_sigmas_type='zero'),
    'EulerAncestralDiscreteScheduler': dict(timestep_spacing='linspace'),
    'HeunDiscreteScheduler': dict(timestep_spacing='linspace'),
    # The same ODE and grid, by linear multistep in sigma (up to 4 steps).
    'LMSDiscreteScheduler': dict(timestep_spacing='linspace'),
    # Pseudo linear multistep (PLMS; Liu et al., 2022) on the 'ddimN'
    # grid: a pseudo improved Euler first step, then Adams-Bashforth
    # combinations of up to four epsilons in DDIM's transfer; the pseudo
    # Runge-Kutta warm-up (skip_prk_steps=False) is not tested.
    'PNDMScheduler': dict(
        skip_prk_steps=True,
        set_alpha_to_one=True,
        timestep_spacing='leading'),
    # Ancestral sampling (ADM's respaced DDPM) on the 'ddimN' grid, with the
    # model's learned variance or DiT's fixed one (see variance_type()).
    'DDPMScheduler': dict(timestep_spacing='leading'),
}

# The schedulers FineDiffusion samples with, by their MMagic/diffusers name.
SUPPORTED_SCHEDULERS = tuple(SCHEDULER_SETTINGS)

# Options that act only when clipping or thresholding is on (both off).
INERT_OPTIONS = ('clip_sample_range', 'dynamic_thresholding_ratio',
                 'sample_max_value')


def variance_type(learn_sigma: bool) -> str:
    """DDPMScheduler's name for DiT's reverse variance: the learned
    interpolation between beta and the posterior variance (Nichol &
    Dhariwal, 2021), or, for a model without variance channels, ADM's fixed
    'large' variance (beta)."""
    return 'learned_range' if learn_sigma else 'fixed_large'


def scheduler_settings(name: str, learn_sigma: bool = True) -> dict:
    """Every constructor option of scheduler ``name`` set to DiT's process.

    Args:
        name (str): One of :data:`SUPPORTED_SCHEDULERS`.
        learn_sigma (bool): Whether the model predicts its variance.

    Returns:
        dict: Keyword arguments of the diffusers scheduler class.

    Raises:
        ValueError: ``name`` is not supported, or the installed diffusers
            lacks one of its settings or gives it an option whose effect on
            DiT's process is unknown.
    """
    if name not in SCHEDULER_SETTINGS:
        raise ValueError(
            f'scheduler type {name!r} is not supported; use one of '
            f'{SUPPORTED_SCHEDULERS}, or scheduler=None for ADM\'s respaced '
            'DDPM (DiT\'s reference sampler)')
    accepted = _options(name)
    missing = sorted(set(SCHEDULER_SETTINGS[name]) - set(accepted))
    if missing:
        # An older diffusers (its DPM-Solver++ before 0.26, UniPC and Euler
        # before 0.28) would end the grid elsewhere, not at sigma = 0.
        raise ValueError(
            f'{name} of diffusers {diffusers_version_string} has no option '
            f'{missing}, which sampling DiT\'s process needs; pin the '
            'diffusers of requirements/lock.txt')
    settings = {k: v for k, v in DIT_PROCESS.items() if k in accepted}
    settings.update(SCHEDULER_SETTINGS[name])
    if name == 'DDPMScheduler':
        settings['variance_type'] = variance_type(learn_sigma)
    unknown = set(accepted) - set(settings) - set(INERT_OPTIONS)
    if unknown:
        raise ValueError(
            f'{name} of this diffusers version has options {sorted(unknown)} '
            'whose effect on DiT\'s process is not known here; pin the '
            'diffusers of requirements/lock.txt')
    return settings


def build_scheduler(cfg: dict, learn_sigma: bool = True):
    """A diffusers scheduler set to DiT's process.

    Args:
        cfg (dict): ``type`` (one of :data:`SUPPORTED_SCHEDULERS`), and
            optionally options of that scheduler; an option may only repeat
            the value :func:`scheduler_settings` sets (or be one of
            :data:`INERT_OPTIONS`).
        learn_sigma (bool): Whether the model predicts its variance (the
            backbone's output has twice its input channels).

    Returns:
        The scheduler, wrapped by MMagic's ``DIFFUSION_SCHEDULERS``.

    Raises:
        ValueError: An unsupported type, an unknown option, or an option
            that contradicts DiT's process (e.g. ``clip_sample=True``); the
            message names the option and both values.
    """
    options = dict(cfg)
    name = options.pop('type', None)
    settings = scheduler_settings(name, learn_sigma)
    for key in ('from_pretrained', 'from_config'):
        if key in options:
            raise ValueError(
                f'scheduler {name}: {key} would load another model\'s '
                'process; '
                'the scheduler is set to DiT\'s, give only its type')
    accepted = _options(name)
    for key, value in options.items():
        if key not in accepted:
            raise ValueError(f'scheduler {name} has no option {key!r}')
        if key in settings and not _same(value, settings[key]):
            raise ValueError(
                f'scheduler {name}: {key}={value!r} contradicts the process '
                f'FineDiffusion samples (DiT\'s, tested at {key}='
                f'{settings[key]!r})')
    return DIFFUSION_SCHEDULERS.build(dict(settings, **options, type=name))


def _options(name: str) -> Dict[str, inspect.Parameter]:
    cls = DIFFUSION_SCHEDULERS.get(name)._scheduler_cls
    parameters = inspect.signature(cls.__init__).parameters
    return {k: p for k, p in parameters.items() if k != 'self'}


def _same(a, b) -> bool:
    # Config files hold lists where the settings hold tuples, and floats
    # where they hold ints.
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def uses_model_variance(scheduler) -> bool:
    """Whether ``scheduler`` reads the model's variance channels."""
    return scheduler.config.get('variance_type') in ('learned',
                                                     'learned_range')


class RespacedDDPM:
    """ADM's ancestral sampling on evenly respaced steps: DiT's reference
    sampler (``create_diffusion(timestep_respacing)``, ``p_sample_loop``).

    Args:
        diffusion (DiTDiffusion): The training process.
        num_sampling_steps (int): Respaced steps, at least 2.
    """

    def __init__(self, diffusion: DiTDiffusion,
                 num_sampling_steps: int) -> None:
        self.process = diffusion.respaced(num_sampling_steps)

    def __call__(self,
                 model_fn: ModelFn,
                 noise: Tensor,
                 generator: Optional[torch.Generator] = None,
                 progress: bool = False) -> Tensor:
        """x_0 from ``noise`` (x_T, (N, C, H, W)); see
        :meth:`DiTDiffusion.p_sample_loop`."""
        return self.process.p_sample_loop(model_fn, noise, generator,
                                          progress)


class SchedulerSampler:
    """A diffusers scheduler set to DiT's process (:func:`build_scheduler`).

    Args:
        cfg (dict): The scheduler config, e.g.
            ``dict(type='DPMSolverMultistepScheduler')``.
        num_sampling_steps (int): Scheduler steps (Heun evaluates the model
            twice in all but the last).
        learn_sigma (bool): Whether the model predicts its variance.
    """

    def __init__(self, cfg: dict, num_sampling_steps: int,
                 learn_sigma: bool = True) -> None:
        self.scheduler = build_scheduler(cfg, learn_sigma)
        self.num_sampling_steps = num_sampling_steps

    @torch.no_grad()
    def __call__(self,
                 model_fn: ModelFn,
                 noise: Tensor,
                 generator: Optional[torch.Generator] = None,
                 progress: bool = False) -> Tensor:
        """Integrates from ``noise`` (standard normal x_T, (N, C, H, W)) to
        x_0.

        Args:
            model_fn (callable): See :data:`ModelFn`.
            noise (Tensor): x_T.
            generator (torch.Generator, optional): For stochastic schedulers.
            progress (bool): Show a progress bar.

        Returns:
            Tensor: The sample x_0, (N, C, H, W).
        """
        scheduler = self.scheduler
        scheduler.set_timesteps(self.num_sampling_steps, device=noise.device)
        takes_generator = 'generator' in inspect.signature(
            scheduler.step).parameters
        extra = dict(generator=generator) if takes_generator else {}
        channels = None if uses_model_variance(scheduler) else noise.shape[1]
        x = noise * scheduler.init_noise_sigma
        timesteps = scheduler.timesteps
        if progress:
            from tqdm import tqdm
            timesteps = tqdm(timesteps, desc='sampling', leave=False)
        for t in timesteps:
            model_in = scheduler.scale_model_input(x, t)
            out = model_fn(model_in, t.expand(len(x)).to(x.device))
            x = scheduler.step(out[:, :channels], t, x, **extra).prev_sample
        return x


Sampler = Union[RespacedDDPM, SchedulerSampler]


def build_sampler(diffusion: DiTDiffusion,
                  scheduler: Optional[dict] = None,
                  num_sampling_steps: int = 250) -> Sampler:
    """The sampler of a FineDiffusion, as one interface.

    Args:
        diffusion (DiTDiffusion): The model's training process.
        scheduler (dict, optional): A diffusers scheduler config (one of
            :data:`SUPPORTED_SCHEDULERS`); None: ADM's respaced DDPM.
        num_sampling_steps (int): Sampling steps. Defaults to 250.

    Returns:
        A callable ``(model_fn, noise, generator, progress) -> x_0``.

    Raises:
        ValueError: From :func:`build_scheduler`, or fewer than 2 respaced
            steps.
    """
    if scheduler is None:
        return RespacedDDPM(diffusion, num_sampling_steps)
    return SchedulerSampler(scheduler, num_sampling_steps,
                            diffusion.learn_sigma)
