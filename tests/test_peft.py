"""PEFT through the real Runner: what trains, what is saved, deltas."""
import os.path as osp

import pytest
import torch
from mmengine.runner import Runner

from finediffusion.inference import build_from_delta
from finediffusion.models import FineDiffusion, TieredDiT
from finediffusion.delta import checkpoint_keys, export_delta
from finediffusion.models.peft import apply_trainable
from test_tiered_dit import official_state_dict


@pytest.fixture(scope='module')
def base(tmp_path_factory):
    """Random 'pretrained' weights in the official layout, shaped for the
    tiny config (3 channels, 16 px, patch 4)."""
    path = tmp_path_factory.mktemp('base') / 'DiT-tiny.pt'
    torch.save(official_state_dict(patch=4, in_ch=3, grid=4), path)
    return str(path)


def peft_cfg(tiny_cfg, base, iters, **model):
    cfg = tiny_cfg.copy()
    cfg.model.backbone.pretrained = base
    cfg.model.trainable = 'finediffusion'
    cfg.model.update(model)
    cfg.train_cfg.max_iters = iters
    cfg.default_hooks.checkpoint.interval = 2
    cfg.experiment_name = f'peft_{iters}_{cfg.get("resume", False)}'
    return cfg


def test_a_step_changes_exactly_the_trainable_set(tiny_cfg, base):
    runner = Runner.from_cfg(peft_cfg(tiny_cfg, base, iters=1))
    model = runner.model
    before = {n: p.detach().clone()
              for n, p in model.backbone.named_parameters()}
    runner.train()
    trainable = set(model.trainable)
    assert 'y_embedder.embedding_table.weight' in trainable
    assert 'blocks.0.norm1.weight' in trainable
    assert 'blocks.0.attn.qkv.weight' not in trainable
    for name, param in model.backbone.named_parameters():
        if name in trainable:
            assert not torch.equal(param, before[name]), name
        else:
            assert torch.equal(param, before[name]), name
    held = {id(p) for group in runner.optim_wrapper.optimizer.param_groups
            for p in group['params']}
    assert held == {id(p) for p in model.parameters() if p.requires_grad}


def test_checkpoint_holds_trainable_tensors_and_resumes(tiny_cfg, base):
    first = Runner.from_cfg(peft_cfg(tiny_cfg, base, iters=2))
    first.train()
    ckpt = torch.load(osp.join(tiny_cfg.work_dir, 'iter_2.pth'))
    assert sorted(ckpt['state_dict']) == sorted(
        checkpoint_keys(first.model.trainable, ema=True))
    assert 'backbone.blocks.0.attn.qkv.weight' not in ckpt['state_dict']
    assert ckpt['meta']['peft']['trainable'] == first.model.trainable

    cfg = peft_cfg(tiny_cfg, base, iters=4)
    cfg.resume = True
    second = Runner.from_cfg(cfg)
    second.train()
    assert second.iter == 4
    sd = torch.load(base)
    assert torch.equal(second.model.backbone.blocks[0].attn.qkv.weight,
                       sd['blocks.0.attn.qkv.weight'])


def test_optimizer_with_frozen_tensors_is_refused(tiny_cfg, base):
    cfg = peft_cfg(tiny_cfg, base, iters=1)
    cfg.optim_wrapper.pop('constructor')
    with pytest.raises(RuntimeError, match='PEFTOptimWrapperConstructor'):
        Runner.from_cfg(cfg).train()


def test_ema_without_its_hook_is_refused(tiny_cfg, base):
    cfg = peft_cfg(tiny_cfg, base, iters=1)
    cfg.custom_hooks = [dict(type='PEFTCheckpointHook')]
    with pytest.raises(RuntimeError, match='TrainableEMAHook'):
        Runner.from_cfg(cfg).train()


def test_delta_export_rebuilds_the_trained_model(tiny_cfg, base, tmp_path):
    runner = Runner.from_cfg(peft_cfg(tiny_cfg, base, iters=2))
    runner.train()
    delta = str(tmp_path / 'delta.safetensors')
    export_delta(osp.join(tiny_cfg.work_dir, 'iter_2.pth'), delta)
    cfg = peft_cfg(tiny_cfg, base, iters=2)
    rebuilt = build_from_delta(cfg, delta)
    trained = runner.model
    with trained.ema.swapped_in(trained.backbone):
        for name, param in trained.backbone.named_parameters():
            assert torch.equal(rebuilt.backbone.get_parameter(name), param), \
                name
    images = rebuilt.sample(torch.tensor([0, 3]), num_sampling_steps=3)
    assert images.shape == (2, 3, 16, 16)
    assert images.min() >= -1 and images.max() <= 1

    # The same delta on a 10-class taxonomy: refused at the first subclass
    # in another superclass, before any tensor is loaded.
    cfg.model.backbone.num_classes = 10
    cfg.model.backbone.taxonomy = [0] * 5 + [1] * 5
    with pytest.raises(ValueError, match=r'taxonomies disagree: subclass '
                       r"'01_disc_00' \(id 2\) belongs to superclass id 0 "
                       r'.* but to superclass .* in the delta'):
        build_from_delta(cfg, delta)


def test_presets_select_the_papers_sets():
    model = TieredDiT(num_classes=4, taxonomy=[0, 0, 1, 1],
                      arch=dict(depth=1, hidden_size=32, num_heads=2),
                      input_size=8, block_scales=True)
    bitfit = apply_trainable(model, 'bitfit')
    assert bitfit and all(n.endswith('.bias') for n in bitfit)
    difffit = apply_trainable(model, 'difffit')
    assert {'blocks.0.scale_attn', 'blocks.0.scale_mlp'} <= set(difffit)
    full = apply_trainable(model, 'full')
    assert 'pos_embed' not in full
    assert len(full) == len(list(model.parameters())) - 1
    with pytest.raises(ValueError, match='match no parameter'):
        apply_trainable(model, ['blocks.*.atn.qkv.bias'])


def test_dit_xl_peft_share_and_delta_size():
    """The paper's setting: DiT-XL/2, 10,000 subclasses + 11 superclasses,
    built on the meta device (no 2.7 GB allocation)."""
    def build(trainable):
        with torch.device('meta'):
            return FineDiffusion(
                backbone=TieredDiT(num_classes=10000,
                                   taxonomy=[i % 11 for i in range(10000)],
                                   arch='XL'),
                trainable=trainable, data_preprocessor=None)

    def nbytes(model, names):
        tensors = dict(model.state_dict(keep_vars=True))
        return sum(tensors[n].numel() * tensors[n].element_size()
                   for n in names)

    peft, full = build('finediffusion'), build('full')
    params = dict(peft.backbone.named_parameters())
    count = sum(params[n].numel() for n in peft.trainable)
    total = sum(p.numel() for p in params.values())
    assert (count, total) == (12_153_632, 685_640_480)
    assert f'{100 * count / total:.3f}' == '1.773'

    # A training checkpoint: the kept state dict plus AdamW's two moments of
    # every trainable tensor. Full fine-tuning keeps everything.
    def checkpoint_bytes(model):
        moments = 2 * sum(p.numel() * p.element_size()
                          for p in model.parameters() if p.requires_grad)
        keys = checkpoint_keys(model.trainable, model.ema is not None)
        return nbytes(model, keys) + moments

    ratio = checkpoint_bytes(peft) / checkpoint_bytes(full)
    assert ratio < 0.025, ratio
