"""The real MMEngine Runner trains the plugin, checkpoints and resumes."""
import math
import os.path as osp
import pickle

import pytest
import torch
from mmengine.runner import Runner


def _train(cfg, max_iters, resume=False, load_from=None):
    cfg = cfg.copy()
    # Runners built in the same second would share a logger otherwise.
    cfg.experiment_name = f'run_{max_iters}_{resume}'

    cfg.train_cfg.max_iters = max_iters
    cfg.default_hooks.checkpoint.interval = 2
    cfg.resume = resume
    cfg.load_from = load_from
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def _adam_steps(runner):
    state = runner.optim_wrapper.optimizer.state
    return {int(s['step']) for s in state.values()}


def test_train_checkpoint_and_resume(tiny_cfg):
    first = _train(tiny_cfg, max_iters=4)
    ckpt = osp.join(tiny_cfg.work_dir, 'iter_4.pth')
    assert osp.isfile(ckpt)
    losses = first.message_hub.get_scalar('train/loss').data[0]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    assert _adam_steps(first) == {4}

    # Resumes from the work dir's latest checkpoint, on torch's default
    # weights_only loading, with no environment variable set.
    second = _train(tiny_cfg, max_iters=6, resume=True)
    assert second.iter == 6
    # The restored message hub continues the loss history, and the
    # optimizer continues its step count: state came back, not just weights.
    assert len(second.message_hub.get_scalar('train/loss').data[0]) == 6
    assert _adam_steps(second) == {6}


def test_load_from_restores_weights_only(tiny_cfg, tmp_path):
    first = _train(tiny_cfg, max_iters=2)
    ckpt = osp.join(tiny_cfg.work_dir, 'iter_2.pth')
    cfg = tiny_cfg.copy()
    cfg.work_dir = str(tmp_path / 'fine_tune')
    cfg.experiment_name = 'load_from'

    cfg.load_from = ckpt
    runner = Runner.from_cfg(cfg)
    runner.load_or_resume()
    assert runner.iter == 0
    trained = first.model.state_dict()
    for key, value in runner.model.state_dict().items():
        assert torch.equal(value, trained[key]), key


def test_weights_only_still_refuses_foreign_objects(tmp_path):
    """The compatibility fix allows MMEngine's own types, nothing else."""
    path = tmp_path / 'foreign.pth'
    torch.save({'state_dict': {}, 'payload': pickle.PicklingError('x')},
               path)
    with pytest.raises(pickle.UnpicklingError, match='PicklingError'):
        torch.load(path)
