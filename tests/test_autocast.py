"""FineDiffusion's precision: its own autocast (the backbone in bf16, the
diffusion in fp32), the caller's autocast left in force, bf16 weights for
sampling, and the compiled backbone."""
import argparse

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.optim.optimizer import amp_optimizer_wrapper
from mmengine.runner import Runner

from finediffusion.inference import add_precision_arguments, apply_precision
from finediffusion.models import FineDiffusion, TieredDiT
from finediffusion.models.tiered_dit import Attention
from test_tiered_dit import SMALL, SUB2SUPER


def _model(autocast=None, **kwargs):
    torch.manual_seed(0)
    backbone = TieredDiT(num_classes=len(SUB2SUPER), taxonomy=SUB2SUPER,
                         arch=SMALL, patch_size=2,
                         input_size=8, in_channels=3, null_prob=0.1)
    return FineDiffusion(backbone, trainable='full', autocast=autocast,
                         data_preprocessor=None, **kwargs)


def test_the_backbone_runs_in_bf16_and_the_loss_in_fp32():
    model = _model('bfloat16')
    seen = []
    model.backbone.blocks[0].mlp.fc1.register_forward_hook(
        lambda module, args, out: seen.append(out.dtype))
    x0 = torch.rand(4, 3, 8, 8) * 2 - 1
    labels = torch.tensor([0, 1, 2, 3])
    torch.manual_seed(1)
    loss = model.latent_loss(x0, labels)
    assert seen == [torch.bfloat16]
    assert loss['loss'].dtype == torch.float32
    loss['loss'].backward()
    assert model.backbone.blocks[0].mlp.fc1.weight.grad.dtype == torch.float32

    # The same draw in float32: bf16 moves the loss, but not far.
    reference = _model()
    reference.load_state_dict(model.state_dict())
    torch.manual_seed(1)
    expected = reference.latent_loss(x0, labels)['loss']
    assert torch.isclose(loss['loss'], expected, rtol=0.05)


def test_sampling_under_autocast_returns_float_images():
    model = _model('bfloat16').eval()
    images = model.sample(torch.tensor([0, 4]), num_sampling_steps=2,
                          scheduler=dict(type='DPMSolverMultistepScheduler'))
    assert images.dtype == torch.float32 and images.shape == (2, 3, 8, 8)
    assert torch.isfinite(images).all()


def test_cpu_attention_in_bf16_is_computed_in_float32():
    torch.manual_seed(0)
    attention = Attention(16, 2)
    x = torch.randn(2, 5, 16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = attention(x)
    assert out.dtype == torch.bfloat16

    # What the module computes in bf16 autocast, with attention in float32.
    with torch.autocast('cpu', dtype=torch.bfloat16):
        q, k, v = attention.qkv(x).reshape(2, 5, 3, 2, 8).permute(
            2, 0, 3, 1, 4)
    mixed = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    with torch.autocast('cpu', dtype=torch.bfloat16):
        expected = attention.proj(
            mixed.to(torch.bfloat16).transpose(1, 2).reshape(2, 5, 16))
    assert torch.equal(out, expected)


@pytest.mark.parametrize('value', ['int8', 'bfloat', 16])
def test_autocast_must_name_a_floating_dtype(value):
    with pytest.raises(ValueError, match='autocast must name'):
        _model(value)


def _record_linear_dtypes(backbone):
    """Output dtypes of every linear layer of the backbone, as they run."""
    seen = []
    for module in backbone.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(
                lambda module, args, out: seen.append(out.dtype))
    return seen


@pytest.mark.parametrize('autocast', [None, dict(cuda='bfloat16')])
def test_the_callers_autocast_reaches_the_backbone_in_training(autocast):
    """With no autocast of its own on this device, the model leaves the
    caller's in force (a disabled torch.autocast would switch it off)."""
    model = _model(autocast)
    seen = _record_linear_dtypes(model.backbone)
    x0 = torch.rand(4, 3, 8, 8) * 2 - 1
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = model.latent_loss(x0, torch.tensor([0, 1, 2, 3]))
    assert seen and set(seen) == {torch.bfloat16}
    assert loss['loss'].dtype == torch.float32


def test_the_callers_autocast_reaches_the_backbone_in_sampling():
    model = _model().eval()
    seen = _record_linear_dtypes(model.backbone)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        images = model.sample(torch.tensor([0, 4]), num_sampling_steps=2)
    assert seen and set(seen) == {torch.bfloat16}
    assert images.dtype == torch.float32


def test_an_autocast_for_another_device_leaves_the_cpu_in_float32():
    model = _model(dict(cuda='bfloat16'))
    seen = _record_linear_dtypes(model.backbone)
    model.latent_loss(torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))
    assert seen and set(seen) == {torch.float32}


def test_bf16_weights_sample_in_bf16():
    model = _model().eval()
    model.cast_backbone(torch.bfloat16)
    seen = _record_linear_dtypes(model.backbone)
    images = model.sample(torch.tensor([0, 4]), num_sampling_steps=2)
    assert set(seen) == {torch.bfloat16}
    assert images.dtype == torch.float32 and torch.isfinite(images).all()
    assert all(b.dtype == torch.bfloat16 for b in model.ema.buffers())


def test_amp_reaches_the_backbone_through_the_runner(tiny_cfg, monkeypatch):
    """tools/train.py --amp builds MMEngine's AmpOptimWrapper in bf16, whose
    autocast must reach the backbone's matrix products (MMEngine refuses
    the wrapper without a GPU: it is told there is one, and its autocast
    then runs on the CPU)."""
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available',
                        lambda: True)
    tiny_cfg.optim_wrapper.type = 'AmpOptimWrapper'
    tiny_cfg.optim_wrapper.dtype = 'bfloat16'
    tiny_cfg.train_cfg.max_iters = 1
    runner = Runner.from_cfg(tiny_cfg)
    seen = _record_linear_dtypes(runner.model.backbone)
    runner.train()
    assert seen and set(seen) == {torch.bfloat16}


def test_compile_runs_the_backbone_compiled_with_the_eager_loss():
    """compile=dict(devices=('cpu', ), ...) compiles in place on the first
    step (state-dict names unchanged); the default leaves CPUs eager."""
    eager = _model()
    compiled = _model(compile=dict(devices=('cpu', ), backend='aot_eager'))
    keys = set(compiled.state_dict())
    x0, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    torch.manual_seed(1)
    expected = eager.latent_loss(x0, labels)['loss']
    torch.manual_seed(1)
    loss = compiled.latent_loss(x0, labels)['loss']
    assert compiled.backbone._compiled_call_impl is not None
    assert set(compiled.state_dict()) == keys
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    loss.backward()
    assert compiled.backbone.y_embedder.embedding_table.weight.grad is not None

    on_gpus = _model(compile=True)
    on_gpus.latent_loss(x0, labels)
    assert on_gpus.backbone._compiled_call_impl is None


@pytest.mark.parametrize('compile', [dict(devices=('tpu', )),
                                     dict(devices='cuda')])
def test_compile_refuses_unknown_devices(compile):
    with pytest.raises(ValueError, match='compile devices'):
        _model(compile=compile)


@pytest.mark.parametrize('on_gpu,flags,expected', [
    (True, [], ('bfloat16', True, dict(cuda='bfloat16'))),
    (False, [], (None, True, dict(cuda='bfloat16'))),
    (True, ['--precision', 'float32', '--no-compile'], (None, False, None)),
    (False, ['--precision', 'bfloat16'], ('bfloat16', True,
                                          dict(cuda='bfloat16'))),
])
def test_inference_precision_flags(on_gpu, flags, expected):
    """tools/sample.py and tools/test.py: bf16 weights by default on a GPU;
    --precision float32 also turns the config's autocast off."""
    parser = argparse.ArgumentParser()
    add_precision_arguments(parser)
    cfg = Config(dict(model=dict(type='FineDiffusion', compile=True,
                                 autocast=dict(cuda='bfloat16'))))
    precision = apply_precision(cfg, parser.parse_args(flags), on_gpu)
    assert (precision, cfg.model.compile, cfg.model.autocast) == expected


def test_inference_precision_flags_refuse_other_models():
    parser = argparse.ArgumentParser()
    add_precision_arguments(parser)
    cfg = Config(dict(model=dict(type='DCGAN')))
    assert apply_precision(cfg, parser.parse_args([]), True) is None
    with pytest.raises(SystemExit, match='builds DCGAN'):
        apply_precision(cfg, parser.parse_args(['--no-compile']), True)



def test_the_fast_path_keeps_the_hybrid_loss():
    """DiT's hybrid loss on the shipped fast path (the backbone compiled by
    inductor, bf16 autocast) against float32 eager, same weights and draws:
    each term within 0.5% (measured 0.02% for the loss, 0.07% for its
    variational-bound term), and the loss float32."""
    x0, labels = torch.rand(8, 3, 8, 8), torch.arange(8) % len(SUB2SUPER)
    eager = _model()
    with torch.no_grad():
        # DiT's zero-initialised output layers would give equal losses in
        # any precision.
        generator = torch.Generator().manual_seed(2)
        for param in eager.backbone.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.1)
    fast = _model('bfloat16', compile=dict(devices=('cpu', )))
    fast.load_state_dict(eager.state_dict())
    torch.manual_seed(1)
    expected = eager.latent_loss(x0, labels)
    torch.manual_seed(1)
    loss = fast.latent_loss(x0, labels)
    assert fast.backbone._compiled_call_impl is not None
    assert loss['loss'].dtype == torch.float32
    assert loss['mse'] != expected['mse']  # bf16 did compute
    for key in ('loss', 'mse', 'vb'):
        error = (abs(loss[key] - expected[key]) / expected[key]).item()
        assert error < 5e-3, (key, error)
