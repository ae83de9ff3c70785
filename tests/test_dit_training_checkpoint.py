"""A training checkpoint of DiT's or fast-DiT's train.py (``{'model', 'ema',
'opt', 'args'}``, ``args`` an ``argparse.Namespace``) works as
``pretrained``: its EMA weights by default, as DiT's sample.py takes, its
raw weights with ``pretrained_weights='model'``; the file is still never
unpickled beyond that Namespace."""
import argparse
import os
import os.path as osp
import pickle

import pytest
import torch
from mmengine.runner import Runner

from finediffusion.models import TieredDiT
from test_tiered_dit import official_state_dict

KEY = 'blocks.0.attn.qkv.weight'


def training_checkpoint(path, args, **shape):
    """What DiT's train.py saves: raw and EMA weights (different values),
    the AdamW state and the command line."""
    model = official_state_dict(seed=0, **shape)
    ema = official_state_dict(seed=1, **shape)
    opt = dict(state={0: dict(step=torch.tensor(7.),
                              exp_avg=torch.zeros(3))},
               param_groups=[dict(lr=1e-4, betas=(0.9, 0.999), params=[0])])
    torch.save(dict(model=model, ema=ema, opt=opt, args=args), path)
    return model, ema


def dit_args():
    return argparse.Namespace(model='DiT-XL/2', image_size=256,
                              num_classes=1000, global_batch_size=256,
                              data_path='/data/imagenet/train', ckpt=None)


def test_a_run_starts_from_the_ema_of_a_dit_training_checkpoint(
        tiny_cfg, tmp_path):
    path = str(tmp_path / '0400000.pt')
    _, ema = training_checkpoint(path, dit_args(), patch=4, in_ch=3, grid=4)
    cfg = tiny_cfg.copy()
    cfg.model.backbone.pretrained = path
    cfg.model.trainable = 'finediffusion'
    runner = Runner.from_cfg(cfg)
    state = runner.model.backbone.state_dict()
    for key, value in ema.items():
        if key != 'y_embedder.embedding_table.weight':
            assert torch.equal(state[key], value), key


def test_raw_weights_of_a_dit_training_checkpoint_on_request(tmp_path):
    path = str(tmp_path / '0400000.pt')
    model, ema = training_checkpoint(path, dit_args())
    kwargs = dict(num_classes=4, taxonomy=[0, 0, 1, 1],
                  arch=dict(depth=2, hidden_size=64, num_heads=4),
                  patch_size=2, input_size=8, in_channels=4, pretrained=path)
    raw = TieredDiT(pretrained_weights='model', **kwargs)
    assert torch.equal(raw.state_dict()[KEY], model[KEY])
    assert torch.equal(TieredDiT(**kwargs).state_dict()[KEY], ema[KEY])
    with pytest.raises(ValueError, match="pretrained_weights must be one of "
                       r"\('ema', 'model'\), got 'raw'"):
        TieredDiT(pretrained_weights='raw', **kwargs)


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker, )


def test_code_in_a_training_checkpoints_args_is_never_run(
        tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    marker = str(tmp_path / 'code_ran')
    args = dit_args()
    args.hook = Payload(marker)  # inside the allowed Namespace
    path = str(tmp_path / 'hostile.pt')
    training_checkpoint(path, args)
    with pytest.raises(pickle.UnpicklingError, match=path):
        TieredDiT(num_classes=4, taxonomy=[0, 0, 1, 1],
                  arch=dict(depth=2, hidden_size=64, num_heads=4),
                  patch_size=2, input_size=8, in_channels=4, pretrained=path)
    assert not osp.exists(marker)
    # The Namespace is allowed for that read only.
    torch.save(dict(args=dit_args()), path)
    with pytest.raises(pickle.UnpicklingError, match='Namespace'):
        torch.load(path, weights_only=True)
