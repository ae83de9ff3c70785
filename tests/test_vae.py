"""FineDiffusion in latent space with a real diffusers AutoencoderKL, built
through MMagic's wrapper from a local folder (a tiny random one, as the SD-VAE
weights cannot be downloaded here)."""
import pytest
import torch
from diffusers import AutoencoderKL
from mmengine.optim import build_optim_wrapper

from mmagic.registry import MODELS
from mmagic.structures import DataSample

SUB2SUPER = [0, 0, 1, 1]


def build(vae_folder, **kwargs):
    return MODELS.build(
        dict(type='FineDiffusion',
             vae=dict(type='AutoencoderKL', from_pretrained=vae_folder),
             backbone=dict(type='TieredDiT', num_classes=4,
                           taxonomy=SUB2SUPER,
                           arch=dict(depth=1, hidden_size=32, num_heads=2),
                           patch_size=2, input_size=8, in_channels=4),
             trainable='full', ema_decay=None, **kwargs))


def batch(n=4):
    samples = []
    for i in range(n):
        sample = DataSample()
        sample.set_gt_label(i % 4)
        samples.append(sample)
    return dict(
        inputs=[torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
                for _ in range(n)],
        data_samples=samples)


def test_latents_are_the_scaled_vae_posterior_samples(vae_folder):
    model = build(vae_folder)
    reference = AutoencoderKL.from_pretrained(vae_folder)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    torch.manual_seed(3)
    ours = model.encode(images)
    torch.manual_seed(3)
    expected = reference.encode(images).latent_dist.sample() * 0.18215
    assert ours.shape == (2, 4, 8, 8)
    assert torch.allclose(ours, expected, atol=1e-6)


def test_train_step_leaves_the_vae_frozen(vae_folder):
    model = build(vae_folder)
    model.init_weights()  # the Runner does this: the VAE must survive it
    vae_before = {k: v.clone() for k, v in model.vae.state_dict().items()}
    reference = AutoencoderKL.from_pretrained(vae_folder).state_dict()
    optim = build_optim_wrapper(
        model, dict(constructor='PEFTOptimWrapperConstructor',
                    optimizer=dict(type='AdamW', lr=1e-3)))
    log = model.train_step(batch(), optim)
    assert torch.isfinite(log['loss'])
    for key, value in model.vae.state_dict().items():
        assert torch.equal(value, vae_before[key]), key
        assert torch.equal(value, reference[key.split('model.', 1)[-1]]), key


def test_predict_returns_decoded_images_in_mmagic_form(vae_folder):
    model = build(vae_folder).eval()
    model.num_sampling_steps = 2
    data = model.data_preprocessor(batch(2))
    outputs = model(**data, mode='predict')
    assert len(outputs) == 2
    assert outputs[0].fake_img.shape == (3, 16, 16)
    assert 0 <= outputs[0].fake_img.min() and outputs[0].fake_img.max() <= 255
    assert outputs[1].gt_label.label.item() == 1


def test_compile_compiles_the_vae_encoder_in_place(vae_folder):
    # The eager SD-VAE encoder ran at 599 images/s on an H200, compiled at
    # 1,400: image configs compile it with the backbone.
    eager = build(vae_folder)
    compiled = build(vae_folder,
                     compile=dict(devices=('cpu', ), backend='aot_eager'))
    keys = set(compiled.state_dict())
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    torch.manual_seed(3)
    expected = eager.encode(images)
    torch.manual_seed(3)
    latents = compiled.encode(images)
    assert compiled.vae.encoder._compiled_call_impl is not None
    assert set(compiled.state_dict()) == keys
    torch.testing.assert_close(latents, expected, rtol=1e-5, atol=1e-6)
    for compile in (True, dict(devices=('cpu', ), vae=False)):
        # The default compiles on GPUs only; vae=False keeps it eager.
        model = build(vae_folder, compile=compile)
        model.encode(images)
        assert model.vae.encoder._compiled_call_impl is None


def test_compile_vae_must_be_a_bool(vae_folder):
    with pytest.raises(ValueError, match='compile vae'):
        build(vae_folder, compile=dict(vae='yes'))
