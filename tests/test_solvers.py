"""Every supported sampler, through FineDiffusion.sample (the path of
tools/sample.py and the metrics), against references written here from the
published equations in float64 numpy: DDIM (Song et al., 2021, eq. 12,
eta = 0) on ADM's 'ddimN' grid, DPM-Solver++(2M) (Lu et al., 2022, Alg. 2),
UniPC-2 (Zhao et al., 2023), DEIS (Zhang & Chen, 2023), Euler, Heun and
linear multistep on the probability-flow ODE (Karras et al., 2022, Alg. 1),
Euler-ancestral (Euler to sigma_down, then noise of sigma_up), PLMS (Liu et
al., 2022) and ADM's respaced ancestral sampler (Ho et al., 2020; Nichol &
Dhariwal, 2021) with the learned or the fixed variance."""
import os.path as osp
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, TINY_CONFIG, train_tiny
from finediffusion.models import FineDiffusion, FineGrainedCFG, TieredDiT
from finediffusion.models.sampling import (SUPPORTED_SCHEDULERS,
                                           build_scheduler,
                                           scheduler_settings)
from test_diffusion import NoiseLike
from test_tiered_dit import SMALL, SUB2SUPER, official_state_dict

T = 1000
BETAS = np.linspace(1e-4, 0.02, T, dtype=np.float64)
ABAR = np.cumprod(1 - BETAS)
SIGMA = np.sqrt((1 - ABAR) / ABAR)  # noise level of x / sqrt(alpha_bar)
LABELS = torch.tensor([0, 2, 4])
SCALE = 4.0
SHAPE = (3, 4, 8, 8)
# The stand-in decoder divides by this, so that sample()'s clamp to [-1, 1]
# keeps every latent.
DECODE_DIVISOR = 100.0


def ddim_grid(n):
    """ADM's 'ddimN' respacing: range(0, T, T // N), from the top."""
    return list(range(0, T, T // n))[::-1]


def dpm_grid(n):
    """N steps of np.linspace(0, T - 1, N + 1), rounded, without 0."""
    return [int(t) for t in np.linspace(0, T - 1, n + 1).round()[::-1][:-1]]


def karras_grid(n):
    """N float steps of np.linspace(0, T - 1, N) and their noise levels
    (linear between integer steps), then sigma = 0."""
    t = np.linspace(0, T - 1, n, dtype=np.float32)[::-1].astype(np.float64)
    return t, np.append(np.interp(t, np.arange(T), SIGMA), 0.0)


def ddim(out_fn, x, n):
    """Song et al. (2021), eq. 12 with eta = 0; alpha_bar = 1 after the last
    step (ADM's respaced alphas_cumprod_prev[0])."""
    grid = ddim_grid(n)
    c = x.shape[1]
    for i, t in enumerate(grid):
        a = ABAR[t]
        a_prev = ABAR[grid[i + 1]] if i + 1 < len(grid) else 1.0
        eps = out_fn(x, t)[:, :c]
        x0 = (x - np.sqrt(1 - a) * eps) / np.sqrt(a)
        x = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps
    return x


def dpm_solver_pp_2m(out_fn, x, n):
    """Lu et al. (2022), DPM-Solver++(2M), Algorithm 2: data prediction,
    multistep second order; the first step first order, and the last, to
    sigma = 0 (lambda = inf, where r_i = 0), first order too."""
    grid = dpm_grid(n)
    c = x.shape[1]
    alpha = np.append(np.sqrt(ABAR[grid]), 1.0)
    sigma = np.append(np.sqrt(1 - ABAR[grid]), 0.0)
    with np.errstate(divide='ignore'):
        lam = np.log(alpha) - np.log(sigma)
    previous = None
    for i, t in enumerate(grid):
        data = (x - sigma[i] * out_fn(x, t)[:, :c]) / alpha[i]
        h = lam[i + 1] - lam[i]
        if previous is None or i == len(grid) - 1:
            d = data
        else:
            r = (lam[i] - lam[i - 1]) / h
            d = (1 + 1 / (2 * r)) * data - 1 / (2 * r) * previous
        decay = 0.0 if np.isinf(h) else np.exp(-h)
        x = sigma[i + 1] / sigma[i] * x - alpha[i + 1] * (decay - 1) * d
        previous = data
    return x


def plms(out_fn, x, n):
    """Liu et al. (2022): pseudo linear multistep on the 'ddimN' grid, each
    step DDIM's transfer (eq. 11) with a combined epsilon: the first a
    pseudo improved Euler step (the mean of the epsilons at both ends), then
    Adams-Bashforth combinations of the last 2, 3, then 4 (eq. 12)."""
    grid = ddim_grid(n)
    c = x.shape[1]
    abar = np.append(ABAR[grid], 1.0)

    def transfer(x, eps, i):
        a, a_prev = abar[i], abar[i + 1]
        return (np.sqrt(a_prev / a) * x - (a_prev - a) * eps /
                (a * np.sqrt(1 - a_prev) + np.sqrt(a * (1 - a) * a_prev)))

    first = out_fn(x, grid[0])[:, :c]
    end = out_fn(transfer(x, first, 0), grid[1])[:, :c]
    x = transfer(x, (first + end) / 2, 0)
    history = [first]
    weights = {2: [3, -1], 3: [23, -16, 5], 4: [55, -59, 37, -9]}
    norms = {2: 2, 3: 12, 4: 24}
    for i in range(1, n):
        history = (history + [out_fn(x, grid[i])[:, :c]])[-4:]
        k = len(history)
        eps = sum(w * e for w, e in zip(weights[k], history[::-1])) / norms[k]
        x = transfer(x, eps, i)
    return x


def unipc(out_fn, x, n):
    """Zhao et al. (2023), UniPC-2 with B(h) = e^h - 1 in data prediction:
    each step's predictor (UniP, order 1 first and last, else 2) and, with
    the model evaluated at its result, the corrector (UniC) of that step,
    whose coefficients solve the paper's order conditions; the corrected
    sample starts the next step, the evaluation is reused."""
    grid = dpm_grid(n)
    c = x.shape[1]
    alpha = np.append(np.sqrt(ABAR[grid]), 1.0)
    sigma = np.append(np.sqrt(1 - ABAR[grid]), 0.0)
    with np.errstate(divide='ignore'):
        lam = np.log(alpha) - np.log(sigma)
    data = []

    def first_order(x, i):
        """The order-1 update from step i to i + 1, and its h, e^-h - 1."""
        h = lam[i + 1] - lam[i]
        b = np.expm1(-h)
        return sigma[i + 1] / sigma[i] * x - alpha[i + 1] * b * data[i], h, b

    for i, t in enumerate(grid):
        m = (x - sigma[i] * out_fn(x, t)[:, :c]) / alpha[i]
        if i > 0:  # UniC on the step i - 1 -> i
            base, h, b = first_order(start, i - 1)
            d_t = m - data[i - 1]
            if order == 1:
                x = base - alpha[i] * b * 0.5 * d_t
            else:
                r = (lam[i - 2] - lam[i - 1]) / h
                d1 = (data[i - 2] - data[i - 1]) / r
                g1 = b / -h - 1
                g2 = g1 / -h - 0.5
                rho = np.linalg.solve([[1.0, 1.0], [r, 1.0]],
                                      [g1 / b, 2 * g2 / b])
                x = base - alpha[i] * b * (rho[0] * d1 + rho[1] * d_t)
        data.append(m)
        order = min(2, n - i, i + 1)
        start = x
        x, h, b = first_order(x, i)
        if order == 2:  # UniP-2
            r = (lam[i - 1] - lam[i]) / h
            x = x - alpha[i + 1] * b * 0.5 * (data[i - 1] - data[i]) / r
    return x


def deis(out_fn, x, n):
    """Zhang & Chen (2023), DEIS with log-rho interpolation: y = x / alpha
    against rho = sigma / alpha has dy/drho = eps; each step integrates
    exactly the polynomial in log rho through the last two epsilons (one in
    the first step and, below 15 steps, the last). It ends at the noise
    level of step 0, not at sigma = 0."""
    grid = dpm_grid(n)
    c = x.shape[1]
    abar = np.append(ABAR[grid], ABAR[0])
    alpha, rho = np.sqrt(abar), np.sqrt((1 - abar) / abar)

    def integral(r, b, a):
        """Antiderivative of the Lagrange basis (log r - log a) /
        (log b - log a)."""
        return r * (np.log(r) - np.log(a) - 1) / (np.log(b) - np.log(a))

    y, previous = x / alpha[0], None
    for i, t in enumerate(grid):
        eps = out_fn(alpha[i] * y, t)[:, :c]
        if previous is None or (i == n - 1 and n < 15):
            y = y + (rho[i + 1] - rho[i]) * eps
        else:
            r0, r1, r = rho[i], rho[i - 1], rho[i + 1]
            y = (y + (integral(r, r0, r1) - integral(r0, r0, r1)) * eps +
                 (integral(r, r1, r0) - integral(r0, r1, r0)) * previous)
        previous = eps
    return alpha[-1] * y


def karras_eps(out_fn, x, sigma, t):
    """epsilon of the VE variable x = x_t / sqrt(alpha_bar) at level sigma."""
    return out_fn(x / np.sqrt(sigma**2 + 1), t)[:, :x.shape[1]]


def euler(out_fn, x, n, heun=False):
    """Karras et al. (2022), Algorithm 1 without churn: Euler steps in
    sigma (dx/dsigma = eps), Heun's correction where sigma_next > 0;
    x_T = sigma_max * noise."""
    t, sigma = karras_grid(n)
    x = x * sigma[0]
    for i in range(n):
        d = karras_eps(out_fn, x, sigma[i], t[i])
        x_next = x + (sigma[i + 1] - sigma[i]) * d
        if heun and sigma[i + 1] > 0:
            d2 = karras_eps(out_fn, x_next, sigma[i + 1], t[i + 1])
            x_next = x + (sigma[i + 1] - sigma[i]) * (d + d2) / 2
        x = x_next
    return x


def lms(out_fn, x, n, order=4):
    """Linear multistep on the same ODE (Karras et al., 2022, sec. 3, as
    k-diffusion integrates it): dx/dsigma = eps through the Lagrange
    polynomial of the last (up to 4) derivatives in sigma, integrated
    exactly from sigma_i to sigma_i+1."""
    t, sigma = karras_grid(n)
    x = x * sigma[0]
    history = []
    for i in range(n):
        history = (history + [karras_eps(out_fn, x, sigma[i], t[i])])[-order:]
        nodes = sigma[i - np.arange(len(history))]  # newest first
        step = np.zeros_like(x)
        for j, derivative in enumerate(history[::-1]):
            basis = np.poly1d([1.0])
            for m, node in enumerate(nodes):
                if m != j:
                    basis *= np.poly1d([1.0, -node]) / (nodes[j] - node)
            integral = basis.integ()
            step += (integral(sigma[i + 1]) - integral(sigma[i])) * derivative
        x = x + step
    return x


def euler_ancestral(out_fn, x, n, noises):
    """Ancestral Euler: an Euler step to sigma_down, then fresh noise of
    sigma_up, with sigma_down^2 + sigma_up^2 = sigma_next^2 and the step's
    variance that of the DDPM posterior (Ho et al., 2020) in sigma terms."""
    t, sigma = karras_grid(n)
    x = x * sigma[0]
    for i in range(n):
        s, s_next = sigma[i], sigma[i + 1]
        up = np.sqrt(s_next**2 * (s**2 - s_next**2) / s**2)
        down = np.sqrt(s_next**2 - up**2)
        x = x + (down - s) * karras_eps(out_fn, x, s, t[i]) + up * noises[i]
    return x


def ancestral(out_fn, x, grid, noises, learn_sigma=True):
    """ADM's respaced DDPM on the kept steps ``grid`` (from the top): the
    posterior mean from predicted x0 (Ho et al., 2020, eqs. 7, 15) and the
    learned interpolation between beta and the clipped posterior variance
    (Nichol & Dhariwal, 2021, eq. 15), or the fixed beta ('large')."""
    kept = np.array(grid[::-1])
    abar = ABAR[kept]
    abar_prev = np.append(1.0, abar[:-1])
    betas = 1 - abar / abar_prev
    post_var = betas * (1 - abar_prev) / (1 - abar)
    post_logvar = np.log(np.append(post_var[1], post_var[1:]))
    c = x.shape[1]
    for k, i in enumerate(range(len(kept) - 1, -1, -1)):
        out = out_fn(x, int(kept[i]))
        eps = out[:, :c]
        x0 = (x - np.sqrt(1 - abar[i]) * eps) / np.sqrt(abar[i])
        mean = (betas[i] * np.sqrt(abar_prev[i]) / (1 - abar[i]) * x0 +
                (1 - abar_prev[i]) * np.sqrt(1 - betas[i]) / (1 - abar[i]) * x)
        if i == 0:
            return mean
        if learn_sigma:
            frac = (out[:, c:] + 1) / 2
            logvar = frac * np.log(betas[i]) + (1 - frac) * post_logvar[i]
        else:
            logvar = np.log(betas[i])
        x = mean + np.exp(0.5 * logvar) * noises[k]


def adm_grid(steps):
    """ADM's 'N' respacing (DiT's sampler): evenly spaced, stride summed."""
    stride, pos, keep = (T - 1) / (steps - 1), 0.0, []
    for _ in range(steps):
        keep.append(round(pos))
        pos += stride
    return keep[::-1]


class Model(NoiseLike):
    """NoiseLike with the attributes FineDiffusion.sample reads."""

    # The rest of the backbone API FineDiffusion uses, on the DiT's embedder.
    class_table, num_classes = TieredDiT.class_table, TieredDiT.num_classes
    check_labels, token_drop = TieredDiT.check_labels, TieredDiT.token_drop

    def __init__(self, dit):
        super().__init__(dit)
        self.y_embedder = dit.y_embedder
        self.grid, self.patch_size = dit.grid, dit.patch_size
        self.in_channels, self.out_channels = dit.in_channels, dit.out_channels
        self.pos_embed = dit.pos_embed


class LinearDecoder(torch.nn.Module):
    """Stand-in for the SD-VAE: a linear decoder, so that a test reads the
    sampled latents back from the images."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))

    def decode(self, z):
        return SimpleNamespace(sample=z / DECODE_DIVISOR)


def dit(learn_sigma, path):
    """The random official-layout DiT; without sigma, its epsilon half."""
    model = TieredDiT(num_classes=len(SUB2SUPER), taxonomy=SUB2SUPER,
                      arch=SMALL, patch_size=2, input_size=8, in_channels=4,
                      learn_sigma=learn_sigma,
                      pretrained=str(path) if learn_sigma else None).eval()
    if not learn_sigma:
        state = official_state_dict()
        w = state['final_layer.linear.weight']
        b = state['final_layer.linear.bias']
        state['final_layer.linear.weight'] = w.reshape(2, 2, 8, -1)[:, :, :4] \
            .reshape(16, -1)
        state['final_layer.linear.bias'] = b.reshape(2, 2, 8)[:, :, :4] \
            .reshape(16)
        del state['y_embedder.embedding_table.weight']
        model.load_state_dict(state, strict=False)
    with torch.no_grad():
        model.y_embedder.embedding_table.weight.normal_(
            0, 0.5, generator=torch.Generator().manual_seed(0))
    return model


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    path = tmp_path_factory.mktemp('dit') / 'dit.pt'
    torch.save(official_state_dict(), path)
    return {
        learn_sigma: FineDiffusion(
            backbone=Model(dit(learn_sigma, path)), vae=LinearDecoder(),
            latent_scale=1.0, trainable='full', ema_decay=None,
            guidance=dict(type='TieredGuidance', scale=SCALE)).eval()
        for learn_sigma in (True, False)
    }


def reference_out_fn(backbone):
    """The fine-grained-guided output, epsilon from two separate calls."""

    def out_fn(x, t):
        xf = torch.from_numpy(x).float()
        ts = torch.full((len(LABELS), ), t, dtype=torch.float32)
        with torch.no_grad():
            sub_out = backbone(xf, ts, LABELS, 'sub').double().numpy()
            sup_out = backbone(xf, ts, LABELS, 'super').double().numpy()
        c = x.shape[1]
        eps = sup_out[:, :c] + SCALE * (sub_out[:, :c] - sup_out[:, :c])
        return np.concatenate([eps, sub_out[:, c:]], axis=1)

    return out_fn


def reference(name, backbone, steps, seed, learn_sigma):
    """The reference sample for sampler ``name`` (None: DiT's DDPM), from
    the generator stream FineDiffusion.sample draws (x_T, then one draw per
    stochastic step)."""
    g = torch.Generator().manual_seed(seed)
    draws = [torch.randn(SHAPE, generator=g).double().numpy()
             for _ in range(2 * steps + 1)]
    x, noises = draws[0], draws[1:]
    out_fn = reference_out_fn(backbone)
    if name is None:
        return ancestral(out_fn, x, adm_grid(steps), noises, learn_sigma)
    if name == 'DDIMScheduler':
        return ddim(out_fn, x, steps)
    if name == 'DPMSolverMultistepScheduler':
        return dpm_solver_pp_2m(out_fn, x, steps)
    if name == 'UniPCMultistepScheduler':
        return unipc(out_fn, x, steps)
    if name == 'DEISMultistepScheduler':
        return deis(out_fn, x, steps)
    if name == 'EulerDiscreteScheduler':
        return euler(out_fn, x, steps)
    if name == 'HeunDiscreteScheduler':
        return euler(out_fn, x, steps, heun=True)
    if name == 'EulerAncestralDiscreteScheduler':
        return euler_ancestral(out_fn, x, steps, noises)
    if name == 'LMSDiscreteScheduler':
        return lms(out_fn, x, steps)
    if name == 'PNDMScheduler':
        return plms(out_fn, x, steps)
    if name == 'DDPMScheduler':
        return ancestral(out_fn, x, ddim_grid(steps), noises, learn_sigma)
    raise AssertionError(f'no reference for {name}')


def sampled_latents(model, sampler, steps, seed):
    images = model.sample(LABELS, steps, scheduler=sampler,
                          generator=torch.Generator().manual_seed(seed))
    return images.double().numpy() * DECODE_DIVISOR


def test_other_registered_schedulers_are_refused():
    """The supported ones are the tuple that test_sampler_equals_reference
    runs; every other scheduler MMagic registers is refused by name."""
    from mmagic.models.diffusion_schedulers import \
        REGISTERED_DIFFUSERS_SCHEDULERS
    others = set(REGISTERED_DIFFUSERS_SCHEDULERS) - set(SUPPORTED_SCHEDULERS)
    assert set(SUPPORTED_SCHEDULERS) < set(REGISTERED_DIFFUSERS_SCHEDULERS)
    for name in sorted(others):
        with pytest.raises(ValueError, match=f"'{name}' is not supported"):
            build_scheduler(dict(type=name))


# Float32 samplers against float64 references through 10 steps (measured
# differences up to 7e-6, samples up to 2.7): float32 rounding.
TOLERANCE = 1e-4


@pytest.mark.parametrize('learn_sigma', [True, False])
@pytest.mark.parametrize('name', (None, ) + SUPPORTED_SCHEDULERS)
def test_sampler_equals_reference(models, name, learn_sigma):
    steps = 10
    model = models[learn_sigma]
    sampler = None if name is None else dict(type=name)
    ours = sampled_latents(model, sampler, steps, seed=3)
    ref = reference(name, model.backbone, steps, 3, learn_sigma)
    assert 1 < np.abs(ref).max() < 0.5 * DECODE_DIVISOR  # nothing clamped
    difference = np.abs(ours - ref).max()
    print(f'{name} learn_sigma={learn_sigma}: max abs difference '
          f'{difference:.3g} (reference max {np.abs(ref).max():.3g})')
    assert difference < TOLERANCE


def test_ddim_does_not_clip_x0(models):
    """DiT's latents are not in [-1, 1]: DDIM must not clip its x0."""
    model = models[True]
    ours = sampled_latents(model, dict(type='DDIMScheduler'), 10, seed=4)
    assert np.abs(ours).max() > 1.5
    ref = reference('DDIMScheduler', model.backbone, 10, 4, True)
    assert np.abs(ours - ref).max() < TOLERANCE


@pytest.mark.parametrize('option,value', [
    ('clip_sample', True),
    ('thresholding', True),
    ('prediction_type', 'v_prediction'),
    ('timestep_spacing', 'trailing'),
    ('steps_offset', 1),
    ('set_alpha_to_one', False),
    ('rescale_betas_zero_snr', True),
    ('beta_schedule', 'scaled_linear'),
])
def test_contradicting_option_is_refused(option, value):
    with pytest.raises(ValueError, match=rf'DDIMScheduler: {option}='):
        build_scheduler(dict(type='DDIMScheduler', **{option: value}))


def test_refusals_name_the_problem(models):
    with pytest.raises(ValueError, match="'KDPM2DiscreteScheduler' is not "
                       'supported'):
        build_scheduler(dict(type='KDPM2DiscreteScheduler'))
    with pytest.raises(ValueError, match='skip_prk_steps=False'):
        build_scheduler(dict(type='PNDMScheduler', skip_prk_steps=False))
    with pytest.raises(ValueError, match='use_karras_sigmas=True'):
        build_scheduler(dict(type='EulerDiscreteScheduler',
                          use_karras_sigmas=True))
    with pytest.raises(ValueError, match="no option 'eta'"):
        build_scheduler(dict(type='DDIMScheduler', eta=0.5))
    with pytest.raises(ValueError, match='from_pretrained'):
        build_scheduler(dict(type='DDIMScheduler', from_pretrained='sd'))
    # Restating DiT's value is fine; a config fails when it is built.
    build_scheduler(dict(type='DDIMScheduler', clip_sample=False))
    with pytest.raises(ValueError, match='clip_sample=True'):
        FineDiffusion(backbone=models[True].backbone, ema_decay=None,
                      trainable='full',
                      scheduler=dict(type='DDIMScheduler', clip_sample=True))


@pytest.mark.parametrize('name', SUPPORTED_SCHEDULERS)
def test_every_option_is_set(name):
    """No option of a supported scheduler is left to diffusers' default."""
    scheduler = build_scheduler(dict(type=name), learn_sigma=False)
    settings = scheduler_settings(name, learn_sigma=False)
    for key, value in settings.items():
        assert scheduler.config[key] == value, key
    if name == 'DDPMScheduler':
        assert scheduler_settings(name)['variance_type'] == 'learned_range'


def test_an_older_diffusers_is_named(monkeypatch):
    """A diffusers without an option DiT's process needs (DPM-Solver++'s
    final_sigmas_type arrived in 0.26) is refused by name, not by the
    scheduler's TypeError."""
    from finediffusion.models import sampling
    options = sampling._options

    def older(name):
        return {k: p for k, p in options(name).items()
                if k != 'final_sigmas_type'}

    monkeypatch.setattr(sampling, '_options', older)
    with pytest.raises(ValueError, match=r"no option \['final_sigmas_type'\]"
                       r'.*requirements/lock.txt'):
        build_scheduler(dict(type='DPMSolverMultistepScheduler'))
    build_scheduler(dict(type='DDIMScheduler'))


def test_fixed_variance_loss_equals_reference(models):
    """learn_sigma=False: DiT's objective is the epsilon MSE alone (Ho et
    al., 2020, eq. 14), through FineDiffusion's loss."""
    model = models[False]
    torch.manual_seed(0)
    x0 = torch.randn(SHAPE)
    torch.manual_seed(1)
    losses = model.latent_loss(x0, LABELS)
    assert set(losses) == {'loss', 'mse'}
    # The same draws: training steps, then noise.
    torch.manual_seed(1)
    tiers = model.backbone.token_drop(LABELS)
    t = torch.randint(0, T, (len(x0), ))
    noise = torch.randn(SHAPE).double().numpy()
    a = ABAR[t.numpy()][:, None, None, None]
    xt = np.sqrt(a) * x0.double().numpy() + np.sqrt(1 - a) * noise
    with torch.no_grad():
        eps = model.backbone(torch.from_numpy(xt).float(), t,
                             LABELS, tiers).double().numpy()
    expected = ((noise - eps)**2).mean()
    assert eps.shape == SHAPE
    assert abs(losses['loss'].item() - expected) < 1e-5 * expected


def test_sample_tool_ddim_equals_reference(tiny_run):
    """tools/sample.py --sampler ddim writes the reference DDIM's images."""
    from finediffusion.inference import load_for_sampling
    config, ckpt, work = tiny_run
    out = str(work / 'ddim')
    run = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/sample.py'), config, ckpt,
         '--classes', '0', '-n', '2', '--sampler', 'ddim', '--steps', '10',
         '--scale', '2', '--out', out, '--device', 'cpu'],
        capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    model, _ = load_for_sampling(config, ckpt)
    labels = torch.tensor([0, 0])
    c = model.backbone.in_channels

    def out_fn(x, t):
        xf = torch.from_numpy(x).float()
        ts = torch.full((len(labels), ), t)
        with torch.no_grad():
            cond = model.backbone(xf, ts, labels).double().numpy()[:, :c]
            ref = model.backbone(xf, ts, labels,
                                 'super').double().numpy()[:, :c]
        return ref + 2.0 * (cond - ref)

    x_t = torch.randn((2, c, 16, 16),
                      generator=torch.Generator().manual_seed(0))
    x0 = ddim(out_fn, x_t.double().numpy(), 10)
    # The pixel-space model's x0 leaves [-1, 1]: clipping it changes it.
    assert np.abs(x0).max() > 1
    expected = ((np.clip(x0, -1, 1) + 1) * 127.5).round()
    folder = osp.join(out, '0_00_square_00')
    for n in range(2):
        png = np.asarray(Image.open(osp.join(folder, f'{n}.png')), np.float64)
        assert np.abs(png - expected[n].transpose(1, 2, 0)).max() <= 1


def test_fixed_variance_trains_and_samples_through_the_tools(tmp_path,
                                                             toy_root):
    """model.backbone.learn_sigma=False: DiT's fixed-variance objective
    trains, and tools/sample.py samples the checkpoint with DiT's DDPM (the
    solvers read epsilon alone; test_sampler_equals_reference covers them)."""
    work = tmp_path / 'work'
    train_tiny(work, toy_root, 'model.backbone.learn_sigma=False')
    ckpt = torch.load(work / 'iter_2.pth', map_location='cpu',
                      weights_only=True)
    # 4 x 4 patches of 3 channels: no variance channels.
    assert ckpt['state_dict']['backbone.final_layer.linear.bias'].shape == (
        48, )
    config = str(work / 'finediffusion_tiny_cpu.py')
    out = str(tmp_path / 'samples')
    run = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/sample.py'), config,
         str(work / 'iter_2.pth'), '--classes', '0', '-n', '2',
         '--sampler', 'ddpm', '--steps', '5', '--out', out],
        capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert osp.isfile(osp.join(out, '0_00_square_00', '1.png'))
