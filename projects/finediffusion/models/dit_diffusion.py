"""The Gaussian diffusion of DiT/ADM: linear betas, learned or fixed variance.

With a learned variance (DiT's ``learn_sigma=True``) training uses DiT's
hybrid objective: epsilon MSE plus the variational bound (in bits per
dimension) on the learned variance with the predicted mean detached (Nichol &
Dhariwal, 2021, "Improved DDPM", eq. 16). Without (``learn_sigma=False``) it
is DiT's fixed-variance process: the epsilon MSE alone (Ho et al., 2020,
eq. 14) and ADM's fixed 'large' reverse variance, beta_t (Ho et al.'s
sigma_t^2 = beta_t).
"""
import math
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor

from mmagic.registry import DIFFUSION_SCHEDULERS


def linear_betas(num_steps: int) -> Tensor:
    """ADM's linear schedule, 1e-4 to 0.02 for 1000 steps, in float64."""
    scale = 1000 / num_steps
    return torch.linspace(scale * 1e-4, scale * 0.02, num_steps,
                          dtype=torch.float64)


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor,
              logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) +
                  (mean1 - mean2)**2 * torch.exp(-logvar2))


def approx_std_normal_cdf(x: Tensor) -> Tensor:
    """The tanh approximation of the standard normal CDF used by ADM."""
    return 0.5 * (1.0 + torch.tanh(
        math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor,
                                        log_scale: Tensor) -> Tensor:
    """Log-likelihood of data in [-1, 1] quantized to 256 bins, in nats."""
    centered = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = approx_std_normal_cdf(inv_std * (centered + 1 / 255))
    cdf_min = approx_std_normal_cdf(inv_std * (centered - 1 / 255))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    # The two outermost bins extend to -inf and +inf.
    return torch.where(
        x < -0.999, log_cdf_plus,
        torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def space_timesteps(num_timesteps: int, steps: int) -> List[int]:
    """``steps`` training steps evenly spaced over ``num_timesteps``, first
    and last included, rounded as ADM's ``space_timesteps`` does."""
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f'cannot take {steps} of {num_timesteps} steps')
    if steps == 1:
        return [0]
    stride = (num_timesteps - 1) / (steps - 1)
    kept, position = [], 0.0
    for _ in range(steps):
        kept.append(round(position))
        # Accumulated, not multiplied: the same floats, so the same rounding.
        position += stride
    return kept


def mean_flat(x: Tensor) -> Tensor:
    """Mean over every dimension but the batch."""
    return x.mean(dim=list(range(1, x.ndim)))


@DIFFUSION_SCHEDULERS.register_module()
class DiTDiffusion:
    """Schedule and training objective of DiT (epsilon; learned range or
    fixed variance).

    Tables are kept in float64 and gathered per step before the cast to the
    data dtype, as in ADM, so that the loss equals the reference's.

    Args:
        num_timesteps (int): Training diffusion steps. Defaults to 1000.
        betas (Tensor, optional): A custom schedule (used by respacing);
            defaults to the linear schedule of ``num_timesteps`` steps.
        timestep_map (list[int], optional): The model timestep of each step
            of a respaced schedule; defaults to the identity.
        snr_gamma (float, optional): Min-SNR-gamma weighting of the epsilon
            MSE (Hang et al., 2023): steps whose signal-to-noise ratio
            exceeds gamma are weighted by gamma / SNR. It spends a short
            run's updates on the noisy steps, where the class decides the
            image. None (DiT) weights every step equally.
        learn_sigma (bool): Whether the model output carries variance values
            after epsilon (2C channels; DiT's default) or epsilon alone (C
            channels: fixed 'large' variance, MSE loss). FineDiffusion sets
            it from its backbone. Defaults to True.
    """

    def __init__(self,
                 num_timesteps: int = 1000,
                 betas: Optional[Tensor] = None,
                 timestep_map: Optional[List[int]] = None,
                 snr_gamma: Optional[float] = None,
                 learn_sigma: bool = True) -> None:
        self.learn_sigma = learn_sigma
        betas = linear_betas(num_timesteps) if betas is None else betas.double()
        if len(betas) < 2:
            # The posterior variance at t = 0 is clipped to t = 1's.
            raise ValueError(f'DiTDiffusion needs at least 2 steps, got '
                             f'{len(betas)}')
        self.num_timesteps = len(betas)
        self.timestep_map = torch.tensor(
            timestep_map if timestep_map is not None else range(len(betas)))
        alphas = 1.0 - betas
        cumprod = torch.cumprod(alphas, dim=0)
        cumprod_prev = torch.cat([cumprod.new_ones(1), cumprod[:-1]])
        self.betas = betas
        self.alphas_cumprod = cumprod
        self.sqrt_alphas_cumprod = cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - cumprod).sqrt()
        self.sqrt_recip_alphas_cumprod = (1.0 / cumprod).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / cumprod - 1).sqrt()
        posterior_var = betas * (1.0 - cumprod_prev) / (1.0 - cumprod)
        # The posterior variance is 0 at t = 0: its log is clipped to t = 1.
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([posterior_var[1:2], posterior_var[1:]]))
        self.posterior_mean_coef1 = betas * cumprod_prev.sqrt() / (1.0 -
                                                                   cumprod)
        self.posterior_mean_coef2 = (1.0 - cumprod_prev) * alphas.sqrt() / (
            1.0 - cumprod)
        self.log_betas = torch.log(betas)
        # ADM's 'fixed large' variance: beta_t, except at t = 0 where the
        # posterior variance of t = 1 keeps the log finite (no noise is
        # added at t = 0).
        self.fixed_log_variance = torch.log(
            torch.cat([posterior_var[1:2], betas[1:]]))
        snr = cumprod / (1.0 - cumprod)
        self.mse_weights = (None if snr_gamma is None else
                            snr.clamp(max=snr_gamma) / snr)
        self._device_tables: Dict[tuple, Tensor] = {}

    def _at(self, table: Tensor, t: Tensor, like: Tensor) -> Tensor:
        """Gathers ``table[t]`` and broadcasts it to the shape of ``like``."""
        # Tables stay on the CPU; one copy per device, not one per call.
        key = (id(table), t.device)
        if key not in self._device_tables:
            self._device_tables[key] = table.to(t.device)
        values = self._device_tables[key][t].to(like.dtype)
        return values.reshape(-1, *([1] * (like.ndim - 1)))

    def sample_timesteps(self, batch_size: int,
                         device: torch.device) -> Tensor:
        """Uniform training steps."""
        return torch.randint(0, self.num_timesteps, (batch_size, ),
                             device=device)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Diffuses clean data ``x0`` to step ``t``."""
        return (self._at(self.sqrt_alphas_cumprod, t, x0) * x0 +
                self._at(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise)

    def q_posterior(self, x0: Tensor, xt: Tensor, t: Tensor):
        """Mean and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = (self._at(self.posterior_mean_coef1, t, xt) * x0 +
                self._at(self.posterior_mean_coef2, t, xt) * xt)
        return mean, self._at(self.posterior_log_variance_clipped, t, xt)

    def p_mean_variance(self, output: Tensor, xt: Tensor, t: Tensor,
                        clip_denoised: bool = False) -> Dict[str, Tensor]:
        """Mean and log-variance of p(x_{t-1} | x_t) from a model output.

        Args:
            output (Tensor): Model output, epsilon then, with
                ``learn_sigma``, variance values in [-1, 1] along the
                channels (2C channels, else C).
            xt (Tensor): Noisy input at step ``t`` (C channels).
            t (Tensor): Steps, shape (N, ).
            clip_denoised (bool): Clip the predicted x0 to [-1, 1].
        """
        eps, var_values = self._split(output, xt)  # (N, C, H, W) each
        if self.learn_sigma:
            min_log = self._at(self.posterior_log_variance_clipped, t, xt)
            max_log = self._at(self.log_betas, t, xt)
            frac = (var_values + 1) / 2  # [-1, 1] -> [0, 1]
            # (N, C, H, W)
            log_variance = frac * max_log + (1 - frac) * min_log
        else:
            # (N, 1, 1, 1)
            log_variance = self._at(self.fixed_log_variance, t, xt)
        pred_x0 = (self._at(self.sqrt_recip_alphas_cumprod, t, xt) * xt -
                   self._at(self.sqrt_recipm1_alphas_cumprod, t, xt) * eps)
        if clip_denoised:
            pred_x0 = pred_x0.clamp(-1, 1)
        mean, _ = self.q_posterior(pred_x0, xt, t)  # (N, C, H, W)
        return dict(mean=mean, log_variance=log_variance, pred_x0=pred_x0)

    def _split(self, output: Tensor, xt: Tensor):
        """(epsilon, variance values or None) of a model output."""
        channels = xt.shape[1] * (2 if self.learn_sigma else 1)
        if output.shape[1] != channels:
            raise ValueError(
                f'the model output has {output.shape[1]} channels, expected '
                f'{channels} for {xt.shape[1]}-channel inputs with '
                f'learn_sigma={self.learn_sigma}')
        if not self.learn_sigma:
            return output, None
        return output.split(xt.shape[1], dim=1)

    def vb_terms_bpd(self, output: Tensor, x0: Tensor, xt: Tensor,
                     t: Tensor) -> Tensor:
        """Per-sample variational bound term in bits per dimension."""
        true_mean, true_log_var = self.q_posterior(x0, xt, t)
        pred = self.p_mean_variance(output, xt, t)
        kl = mean_flat(
            normal_kl(true_mean, true_log_var, pred['mean'],
                      pred['log_variance'])) / math.log(2.0)
        # In float64: at t = 0 the bins' CDFs are close to each other and to
        # 1, and their difference cancels in float32 (errors up to 5e-4).
        nll = -mean_flat(
            discretized_gaussian_log_likelihood(
                x0.double(), pred['mean'].double(),
                0.5 * pred['log_variance'].double())) / math.log(2.0)
        return torch.where(t == 0, nll.to(kl.dtype), kl)

    def training_losses(self,
                        model_fn: Callable[[Tensor, Tensor], Tensor],
                        x0: Tensor,
                        t: Tensor,
                        noise: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """DiT's loss per sample: epsilon MSE, plus the VB on the variance
        when the model learns it.

        Args:
            model_fn (callable): Maps (x_t, t) to the model output (2C
                channels with ``learn_sigma``, else C).
            x0 (Tensor): Clean data.
            t (Tensor): Steps, shape (N, ).
            noise (Tensor, optional): The noise; drawn when not given.

        Returns:
            dict: ``loss``, ``mse`` and, with ``learn_sigma``, ``vb``, each
            of shape (N, ).
        """
        if noise is None:
            # Not randn_like: the draw must not depend on x0's memory layout
            # (latents from the VAE and from a cache differ in strides).
            noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype)
        xt = self.q_sample(x0, t, noise)  # (N, C, H, W)
        eps, var_values = self._split(model_fn(xt, t), xt)  # (N, C, H, W)
        mse = mean_flat((noise - eps)**2)  # (N, )
        weighted = mse if self.mse_weights is None else (
            self._at(self.mse_weights, t, mse) * mse)
        if not self.learn_sigma:
            return dict(loss=weighted, mse=mse)
        # The VB term trains only the variance: the mean gets the MSE alone.
        vb = self.vb_terms_bpd(
            torch.cat([eps.detach(), var_values], dim=1), x0, xt, t)
        return dict(loss=weighted + vb, mse=mse, vb=vb)

    def respaced(self, steps: int) -> 'DiTDiffusion':
        """The same process on ``steps`` evenly spaced steps (ADM respacing).

        Keeps the cumulative alphas of the kept steps and derives the betas
        that join them (and from them the fixed or learned variance's
        bounds); the model is still called with original timesteps.

        Raises:
            ValueError: For fewer than 2 steps (respacing keeps the first
                and the last) or more than the process has.
        """
        if steps < 2:
            raise ValueError(f'DDPM sampling takes at least 2 steps, got '
                             f'{steps}')
        kept = space_timesteps(self.num_timesteps, steps)
        cumprod = self.alphas_cumprod[kept]
        previous = torch.cat([cumprod.new_ones(1), cumprod[:-1]])
        return DiTDiffusion(
            betas=1 - cumprod / previous,
            timestep_map=self.timestep_map[kept].tolist(),
            learn_sigma=self.learn_sigma)

    @torch.no_grad()
    def p_sample_loop(self,
                      model_fn: Callable[[Tensor, Tensor], Tensor],
                      noise: Tensor,
                      generator: Optional[torch.Generator] = None,
                      progress: bool = False) -> Tensor:
        """Ancestral sampling from ``noise`` down to x0.

        Args:
            model_fn (callable): Maps (x_t, model timesteps) to the model
                output (2C channels with ``learn_sigma``, else C), e.g. a
                guided model.
            noise (Tensor): x_T.
            generator (torch.Generator, optional): Draws the noise of each
                step, on ``noise``'s device.
            progress (bool): Show a progress bar.

        Returns:
            Tensor: The sample x0 (not clipped).
        """
        x = noise
        steps = range(self.num_timesteps - 1, -1, -1)
        if progress:
            from tqdm import tqdm
            steps = tqdm(steps, desc='sampling', leave=False)
        for i in steps:
            t = torch.full((len(x), ), i, device=x.device, dtype=torch.long)
            model_t = self._at(self.timestep_map, t, t)  # (N, ) original steps
            out = self.p_mean_variance(model_fn(x, model_t), x, t)
            if i == 0:
                return out['mean']
            z = torch.randn(
                x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = out['mean'] + torch.exp(0.5 * out['log_variance']) * z
        return x
