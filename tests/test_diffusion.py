"""DiT's objective and ADM's respaced sampler against references written
here from the published equations (Ho et al. 2020; Nichol & Dhariwal 2021),
in float64 numpy."""
import math

import numpy as np
import pytest
import torch

from finediffusion.models import DiTDiffusion, FineGrainedCFG, TieredDiT
from test_tiered_dit import SMALL, SUB2SUPER, official_state_dict


class Reference:
    """Linear-beta Gaussian diffusion, optionally respaced to ``steps``."""

    def __init__(self, steps=None, T=1000):
        betas = np.linspace(1e-4, 0.02, T, dtype=np.float64)
        abar = np.cumprod(1 - betas)
        self.timestep_map = np.arange(T)
        if steps is not None:
            # ADM: evenly spaced, stride accumulated, Python rounding.
            stride, pos, keep = (T - 1) / (steps - 1), 0.0, []
            for _ in range(steps):
                keep.append(round(pos))
                pos += stride
            prev, new_betas = 1.0, []
            for i in keep:
                new_betas.append(1 - abar[i] / prev)
                prev = abar[i]
            betas, abar = np.array(new_betas), abar[keep]
            self.timestep_map = np.array(keep)
        abar_prev = np.append(1.0, abar[:-1])
        self.betas, self.abar = betas, abar
        self.post_var = betas * (1 - abar_prev) / (1 - abar)
        self.post_logvar = np.log(np.append(self.post_var[1], self.post_var[1:]))
        self.c1 = betas * np.sqrt(abar_prev) / (1 - abar)
        self.c2 = (1 - abar_prev) * np.sqrt(1 - betas) / (1 - abar)

    def p(self, out, x, t):
        """Model mean, log-variance of p(x_{t-1} | x_t) (learned range)."""
        c = x.shape[1]
        eps, v = out[:, :c], out[:, c:]
        frac = (v + 1) / 2
        logvar = frac * np.log(self.betas[t]) + (1 - frac) * self.post_logvar[t]
        x0 = x / np.sqrt(self.abar[t]) - np.sqrt(1 / self.abar[t] - 1) * eps
        return self.c1[t] * x0 + self.c2[t] * x, logvar


def cdf(x):
    return 0.5 * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def reference_loss(ref, x0, t, noise, model_fn):
    """Per-sample mse + vb (bits/dim) of DiT's hybrid objective."""
    x0n, nn_ = x0.double().numpy(), noise.double().numpy()
    a = ref.abar[t.numpy()][:, None, None, None]
    xt = np.sqrt(a) * x0n + np.sqrt(1 - a) * nn_
    out = model_fn(torch.from_numpy(xt).float(), t).double().numpy()
    c = x0.shape[1]
    mse = ((nn_ - out[:, :c])**2).mean(axis=(1, 2, 3))
    losses = []
    for i, step in enumerate(t.tolist()):
        mean, logvar = ref.p(out[i:i + 1], xt[i:i + 1], step)
        true_mean = ref.c1[step] * x0n[i:i + 1] + ref.c2[step] * xt[i:i + 1]
        true_logvar = ref.post_logvar[step]
        if step == 0:
            inv = np.exp(-0.5 * logvar)
            x, d = x0n[i:i + 1], x0n[i:i + 1] - mean
            plus, minus = cdf(inv * (d + 1 / 255)), cdf(inv * (d - 1 / 255))
            logp = np.where(
                x < -0.999, np.log(np.maximum(plus, 1e-12)),
                np.where(x > 0.999, np.log(np.maximum(1 - minus, 1e-12)),
                         np.log(np.maximum(plus - minus, 1e-12))))
            losses.append(-logp.mean() / math.log(2))
        else:
            kl = 0.5 * (-1 + logvar - true_logvar +
                        np.exp(true_logvar - logvar) +
                        (true_mean - mean)**2 * np.exp(-logvar))
            losses.append(kl.mean() / math.log(2))
    return mse + np.array(losses)


@pytest.fixture(scope='module')
def backbone(tmp_path_factory):
    path = tmp_path_factory.mktemp('dit') / 'dit.pt'
    torch.save(official_state_dict(), path)
    model = TieredDiT(num_classes=len(SUB2SUPER), taxonomy=SUB2SUPER,
                      arch=SMALL, patch_size=2, input_size=8, in_channels=4,
                      pretrained=str(path)).eval()
    with torch.no_grad():
        model.y_embedder.embedding_table.weight.normal_(
            0, 0.5, generator=torch.Generator().manual_seed(0))
    return model


class NoiseLike(torch.nn.Module):
    """A random DiT made to behave like a trained one: eps close to x_t and
    variance values in [-1, 1], so samples keep the data's scale (a random
    eps makes x0 = x_t / sqrt(alpha_bar) explode at large t)."""

    # Guidance runs through the backbone's own methods, on this forward.
    forward_with_cfg = TieredDiT.forward_with_cfg
    forward_with_hierarchical_cfg = TieredDiT.forward_with_hierarchical_cfg
    tier = TieredDiT.tier
    guidance_tiers = TieredDiT.guidance_tiers
    ranks = TieredDiT.ranks

    def __init__(self, dit):
        super().__init__()
        self.dit = dit

    @property
    def has_null_class(self):
        return self.dit.has_null_class

    @property
    def y_embedder(self):
        return self.dit.y_embedder

    @property
    def super_rank(self):
        return self.dit.super_rank

    def forward(self, x, t, y, tiers='sub'):
        out = self.dit(x, t, y, tiers)
        c = x.shape[1]
        return torch.cat([x + 0.1 * out[:, :c], torch.tanh(out[:, c:])], 1)


def test_hybrid_loss_equals_reference(backbone):
    torch.manual_seed(0)
    x0 = torch.rand(6, 4, 8, 8) * 2 - 1
    x0[0, 0, 0, 0] = -1.0  # both edge bins of the decoder likelihood
    x0[0, 0, 0, 1] = 1.0
    t = torch.tensor([0, 1, 10, 250, 998, 999])
    noise = torch.randn_like(x0)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])

    def model_fn(xt, steps):
        with torch.no_grad():
            return backbone(xt, steps, labels)

    ours = DiTDiffusion().training_losses(model_fn, x0, t, noise)['loss']
    ref = reference_loss(Reference(), x0, t, noise, model_fn)
    np.testing.assert_allclose(ours.double().numpy(), ref, rtol=1e-5)


def test_min_snr_weighting_scales_only_the_clean_steps(backbone):
    torch.manual_seed(0)
    x0 = torch.rand(4, 4, 8, 8) * 2 - 1
    t = torch.tensor([5, 200, 600, 999])
    noise = torch.randn_like(x0)
    labels = torch.tensor([0, 1, 2, 3])

    def model_fn(xt, steps):
        with torch.no_grad():
            return backbone(xt, steps, labels)

    plain = DiTDiffusion().training_losses(model_fn, x0, t, noise)
    weighted = DiTDiffusion(snr_gamma=1.0).training_losses(
        model_fn, x0, t, noise)
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))[t.numpy()]
    snr = abar / (1 - abar)
    expected = (np.minimum(snr, 1.0) / snr * plain['mse'].double().numpy() +
                plain['vb'].double().numpy())
    np.testing.assert_allclose(weighted['loss'].double().numpy(), expected,
                               rtol=1e-5)
    # The noisy steps (SNR < 1) keep their weight; the clean ones lose it.
    assert snr[0] > 1 > snr[-1]
    assert weighted['loss'][0] < plain['loss'][0]
    assert weighted['loss'][-1] == plain['loss'][-1]
    assert torch.equal(weighted['mse'], plain['mse'])


def reference_sample(ref, backbone, noise_seq, labels, scale):
    """ADM's p_sample loop with fine-grained CFG computed by two calls."""
    x = noise_seq[0].double().numpy()
    c = x.shape[1]
    for k, i in enumerate(range(len(ref.betas) - 1, -1, -1)):
        ts = torch.full((len(labels), ), int(ref.timestep_map[i]))
        xf = torch.from_numpy(x).float()
        with torch.no_grad():
            sub_out = backbone(xf, ts, labels).double().numpy()
            sup_out = backbone(xf, ts, labels, 'super').double().numpy()
        eps = sup_out[:, :c] + scale * (sub_out[:, :c] - sup_out[:, :c])
        out = np.concatenate([eps, sub_out[:, c:]], axis=1)
        mean, logvar = ref.p(out, x, i)
        x = mean if i == 0 else (
            mean + np.exp(0.5 * logvar) * noise_seq[k + 1].double().numpy())
    return x


@pytest.mark.parametrize('steps', [10, 250])
def test_respaced_fine_grained_sampling_equals_reference(backbone, steps):
    backbone = NoiseLike(backbone)
    labels = torch.tensor([0, 2, 4])
    shape = (3, 4, 8, 8)
    g = torch.Generator().manual_seed(1)
    noise_seq = [torch.randn(shape, generator=g) for _ in range(steps)]

    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(shape, generator=g)
    cfg = FineGrainedCFG(scale=4.0)
    ours = DiTDiffusion().respaced(steps).p_sample_loop(
        lambda x, t: cfg(backbone, x, t, labels), x_t, generator=g)
    ref = reference_sample(Reference(steps), backbone, noise_seq, labels, 4.0)
    assert np.abs(ref).max() < 20  # a meaningful scale for the tolerance
    assert np.abs(ours.double().numpy() - ref).max() < 1e-4


def test_guidance_limits(backbone):
    x, t, labels = torch.randn(3, 4, 8, 8), torch.tensor([5, 50, 500]), \
        torch.tensor([0, 2, 4])
    with torch.no_grad():
        cond = backbone(x, t, labels, 'sub')
        ref = backbone(x, t, labels, 'super')
        one = FineGrainedCFG(scale=1.0)(backbone, x, t, labels)
        zero = FineGrainedCFG(scale=0.0)(backbone, x, t, labels)
        per = FineGrainedCFG()(backbone, x, t, labels,
                               scale=torch.tensor([1.0, 0.0, 1.0]))
        quirk = FineGrainedCFG(scale=3.0, guided_channels=3)(backbone, x, t,
                                                            labels)
    assert torch.allclose(one, cond, atol=1e-5)
    assert torch.allclose(zero[:, :4], ref[:, :4], atol=1e-5)
    assert torch.allclose(zero[:, 4:], cond[:, 4:], atol=1e-5)
    assert torch.allclose(per[1], zero[1], atol=1e-5)
    assert torch.allclose(per[0], cond[0], atol=1e-5)
    assert torch.allclose(quirk[:, 3:], cond[:, 3:], atol=1e-5)
    with pytest.raises(ValueError, match='null row'):
        FineGrainedCFG(mode='standard')(backbone, x, t, labels)


def test_fewer_than_two_steps_are_refused():
    # One respaced step had no posterior variance to clip and raised an
    # IndexError in the sampler.
    with pytest.raises(ValueError, match='at least 2 steps, got 1'):
        DiTDiffusion().respaced(1)
    with pytest.raises(ValueError, match='at least 2 steps, got 1'):
        DiTDiffusion(num_timesteps=1)
    assert DiTDiffusion().respaced(2).timestep_map.tolist() == [0, 999]
