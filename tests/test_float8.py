"""float8=True: torchao's float8 for the frozen linear layers, GPUs only."""
import sys

import pytest
import torch

from finediffusion.models.float8 import convert_frozen_linears
from test_autocast import _model


def test_float8_leaves_cpu_runs_unchanged():
    plain, float8 = _model(), _model(float8=True)
    x0, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    torch.manual_seed(1)
    expected = plain.latent_loss(x0, labels)['loss']
    torch.manual_seed(1)
    loss = float8.latent_loss(x0, labels)['loss']
    assert float8.float8_layers is None
    assert torch.equal(loss, expected)


def test_float8_refuses_a_device_without_float8_units():
    with pytest.raises(RuntimeError, match='compute capability 8.9.*on cpu'):
        convert_frozen_linears(_model().backbone)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
def test_float8_names_torchao_when_it_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, 'torchao.float8', None)
    backbone = _model().backbone.cuda()
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip('needs float8 matrix units')
    with pytest.raises(ImportError, match='pip install torchao'):
        convert_frozen_linears(backbone)


@pytest.mark.skipif(not torch.cuda.is_available()
                    or torch.cuda.get_device_capability() < (8, 9),
                    reason='needs a GPU with float8 matrix units')
def test_float8_converts_the_frozen_token_linears_only():
    pytest.importorskip('torchao')
    model = _model()
    model.backbone.requires_grad_(False)
    model.backbone.blocks[0].mlp.fc1.weight.requires_grad_(True)
    names = dict(model.backbone.named_parameters())
    converted = convert_frozen_linears(model.backbone.cuda())
    assert 'blocks.0.mlp.fc1' not in converted and converted
    assert all(n.endswith(('attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2'))
               for n in converted)
    assert dict(model.backbone.named_parameters()).keys() == names.keys()
