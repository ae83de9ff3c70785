"""FineDiffusion(autocast=...): the backbone in bf16, the diffusion in fp32."""
import pytest
import torch
import torch.nn.functional as F

from finediffusion.models import FineDiffusion, TieredDiT
from finediffusion.models.tiered_dit import Attention
from test_tiered_dit import SMALL, SUB2SUPER


def _model(autocast=None):
    torch.manual_seed(0)
    backbone = TieredDiT(num_classes=len(SUB2SUPER), sub2super=SUB2SUPER,
                         arch=SMALL, patch_size=2,
                         input_size=8, in_channels=3, null_prob=0.1)
    return FineDiffusion(backbone, trainable='full', autocast=autocast,
                         data_preprocessor=None)


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
    images = model.sample(torch.tensor([0, 4]), num_steps=2,
                          sampler=dict(type='DPMSolverMultistepScheduler'))
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
