"""A training run killed with SIGKILL resumes from its last checkpoint on
the loss curve of an uninterrupted run, with the same optimizer and EMA;
resuming loads no batch it has trained, and a checkpoint saved by processes
that saw other devices or another world size still resumes."""
import glob
import json
import os
import os.path as osp
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from mmengine.dataset import InfiniteSampler

from conftest import REPO
from finediffusion.engine import (ResumableInfiniteSampler, SampleIndex,
                                  latest_checkpoint)
from finediffusion.engine.resume import saved_cuda_state
from probes import pipeline_calls
from test_peft import base, peft_cfg  # noqa: F401  (the base fixture)


def losses(work_dir):
    curve = {}
    for path in glob.glob(osp.join(work_dir, 'losses_*.jsonl')):
        with open(path) as f:
            curve.update((i, loss) for i, loss in map(json.loads, f))
    return curve


def train(config, *args, **kwargs):
    env = dict(os.environ, PYTHONPATH=osp.join(REPO, 'tests') + os.pathsep +
               os.environ.get('PYTHONPATH', ''))
    return subprocess.Popen(
        [sys.executable, osp.join(REPO, 'tools/train.py'), config, *args],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, **kwargs)


def test_killed_run_resumes_on_the_same_curve(tiny_cfg, base,  # noqa: F811
                                              tmp_path):
    cfg = peft_cfg(tiny_cfg, base, iters=2000)
    cfg.custom_imports = dict(imports=['finediffusion', 'probes'],
                              allow_failed_imports=False)
    cfg.custom_hooks.append(dict(type='LossProbeHook'))
    # Workers seeded by MMEngine make the augmentations repeat on resume.
    cfg.train_dataloader.num_workers = 1
    cfg.train_dataloader.persistent_workers = True
    cfg.default_hooks.checkpoint.interval = 4
    cfg.default_hooks.checkpoint.max_keep_ckpts = 2
    config = str(tmp_path / 'cfg.py')
    cfg.dump(config)

    run = train(config, start_new_session=True)
    deadline = time.time() + 300
    while not osp.isfile(osp.join(cfg.work_dir, 'iter_8.pth')):
        assert run.poll() is None, run.stderr.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGKILL)  # the trainer and its data worker
    run.wait()
    killed_at = max(losses(cfg.work_dir))
    ckpt = latest_checkpoint(cfg.work_dir)
    last = int(ckpt.rsplit('_', 1)[1].split('.')[0])
    assert 8 <= last <= killed_at
    stop = last + 4

    resumed = train(config, '--resume', '--cfg-options',
                    f'train_cfg.max_iters={stop}')
    assert resumed.wait() == 0, resumed.stderr.read()[-3000:]
    whole_dir = str(tmp_path / 'uninterrupted')
    whole = train(config, '--work-dir', whole_dir, '--cfg-options',
                  f'train_cfg.max_iters={stop}')
    assert whole.wait() == 0, whole.stderr.read()[-3000:]

    # The resumed run's steps last+1..stop are the uninterrupted run's.
    after = {i: v for i, v in losses(cfg.work_dir).items() if i > last}
    reference = losses(whole_dir)
    assert sorted(after) == list(range(last + 1, stop + 1))
    for i in after:
        assert after[i] == reference[i], (i, after[i], reference[i])

    # Same optimizer and EMA state at the end.
    a = torch.load(osp.join(cfg.work_dir, f'iter_{stop}.pth'))
    b = torch.load(osp.join(whole_dir, f'iter_{stop}.pth'))
    for key, value in b['state_dict'].items():
        assert torch.equal(a['state_dict'][key], value), key
    steps = {int(s['step']) for s in a['optimizer']['state'].values()}
    assert steps == {stop}
    assert a['meta']['iter'] == b['meta']['iter'] == stop
    assert not glob.glob(osp.join(cfg.work_dir, '*.partial'))


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError('killed while writing')


def test_interrupted_write_leaves_the_previous_checkpoint(tmp_path):
    from mmengine.runner import runner as mmengine_runner
    save = mmengine_runner.save_checkpoint  # what the Runner calls
    work = str(tmp_path)
    save({'meta': {'iter': 4}}, osp.join(work, 'iter_4.pth'))
    with open(osp.join(work, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(work, 'iter_4.pth'))
    try:
        save({'meta': {'iter': 8}, 'x': Unpicklable()},
             osp.join(work, 'iter_8.pth'))
    except RuntimeError:
        pass
    assert not osp.exists(osp.join(work, 'iter_8.pth'))
    assert latest_checkpoint(work) == osp.join(work, 'iter_4.pth')
    assert torch.load(latest_checkpoint(work))['meta']['iter'] == 4
    # A pointer emptied by a kill while it was rewritten: the newest whole
    # numbered checkpoint is taken.
    save({'meta': {'iter': 12}}, osp.join(work, 'iter_12.pth'))
    open(osp.join(work, 'last_checkpoint'), 'w').close()
    assert latest_checkpoint(work) == osp.join(work, 'iter_12.pth')


def probed(cfg, calls_dir):
    """The config with the loss probe and a pipeline-call counter writing to
    ``calls_dir`` (after the random Flip, before packing)."""
    cfg = cfg.copy()
    cfg.custom_imports = dict(imports=['finediffusion', 'probes'],
                              allow_failed_imports=False)
    cfg.custom_hooks = cfg.custom_hooks + [dict(type='LossProbeHook')]
    pipeline = list(cfg.train_dataloader.dataset.pipeline)
    pipeline.insert(-1, dict(type='PipelineCallProbe', folder=calls_dir))
    cfg.train_dataloader.dataset.pipeline = pipeline
    return cfg


def run_train(config, *args):
    run = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/train.py'), config, *args],
        env=dict(os.environ, PYTHONPATH=osp.join(REPO, 'tests') + os.pathsep +
                 os.environ.get('PYTHONPATH', '')),
        capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout + run.stderr


@pytest.mark.parametrize('num_workers', [0, 1])
def test_resume_loads_no_trained_batch(tiny_cfg, tmp_path, num_workers):
    """Resumed at iteration 12 of batches of 8, the run loads the batches it
    trains (and what its worker prefetches), not the 96 samples before."""
    tiny_cfg.train_dataloader.num_workers = num_workers
    tiny_cfg.train_dataloader.persistent_workers = num_workers > 0
    tiny_cfg.train_cfg.max_iters = 14
    tiny_cfg.default_hooks.checkpoint.interval = 12
    whole = probed(tiny_cfg, str(tmp_path / 'calls_whole'))
    whole.dump(str(tmp_path / 'whole.py'))
    run_train(str(tmp_path / 'whole.py'))
    resumed = probed(tiny_cfg, str(tmp_path / 'calls_resumed'))
    resumed.work_dir = str(tmp_path / 'resumed')
    resumed.dump(str(tmp_path / 'resumed.py'))
    log = run_train(str(tmp_path / 'resumed.py'), '--resume',
                    osp.join(whole.work_dir, 'iter_12.pth'))

    batch = tiny_cfg.train_dataloader.batch_size
    calls = pipeline_calls(str(tmp_path / 'calls_resumed'))
    # 2 trained batches, and up to prefetch_factor (2) batches per worker
    # loaded but not trained when the run ends.
    assert 2 * batch <= calls <= (2 + 2 * num_workers) * batch, (
        f'{calls} samples loaded to train 2 batches of {batch} from '
        'iteration 12')
    assert 'Advance dataloader' not in log
    # The same augmentations, timesteps and noise as without the break.
    after = losses(resumed.work_dir)
    reference = losses(whole.work_dir)
    assert sorted(after) == [13, 14]
    for i in after:
        assert after[i] == reference[i], (i, after[i], reference[i])


def test_sampler_starts_where_its_stream_was():
    """Started at position n, each rank's stream is MMEngine's
    InfiniteSampler's after n draws, across epochs; each index carries its
    draw in the stream of all ranks."""

    class Items:
        def __len__(self):
            return 7

    for world_size in (1, 3):
        for rank in range(world_size):
            ours = ResumableInfiniteSampler(Items(), seed=5)
            reference = InfiniteSampler(Items(), seed=5)
            for sampler in (ours, reference):
                sampler.rank, sampler.world_size = rank, world_size
                sampler.indices = sampler._indices_of_rank()
            stream = [next(reference.indices) for _ in range(30)]
            for start in (0, 2, 9, 16):
                ours.start_at(start)
                got = [next(ours.indices) for _ in range(30 - start)]
                assert got == stream[start:], (world_size, rank, start)
                assert all(isinstance(i, SampleIndex) for i in got)
                assert [i.draw for i in got] == [
                    rank + p * world_size for p in range(start, 30)]


def test_saved_cuda_state_is_the_ranks_own_device():
    one = torch.arange(16, dtype=torch.uint8)
    assert torch.equal(saved_cuda_state(one, rank=3), one)
    # An 8-GPU process of an earlier version saved every device's state;
    # rank 5 drew on device 5 (one process per GPU).
    eight = [torch.full((16, ), d, dtype=torch.uint8) for d in range(8)]
    assert torch.equal(saved_cuda_state(eight, rank=5), eight[5])
    assert torch.equal(saved_cuda_state(tuple(eight), rank=13), eight[5])


def test_resume_from_processes_that_saw_other_devices(tiny_cfg, tmp_path):
    """A checkpoint whose ranks each saved 8 CUDA devices' random states
    (as processes of an 8-GPU node did) resumes here on the uninterrupted
    run's curve, and says which state it could not restore; one of another
    world size resumes with a warning."""
    tiny_cfg.train_cfg.max_iters = 4
    tiny_cfg.default_hooks.checkpoint.interval = 2
    whole = probed(tiny_cfg, str(tmp_path / 'calls'))
    whole.dump(str(tmp_path / 'whole.py'))
    run_train(str(tmp_path / 'whole.py'))

    ckpt = torch.load(osp.join(whole.work_dir, 'iter_2.pth'))
    (state, ) = ckpt['meta']['random_states']
    # torch.cuda.get_rng_state_all() of a process seeing 8 GPUs: one
    # Philox state (seed, offset; 16 bytes) per device.
    state['cuda'] = tuple(
        torch.tensor([d, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0],
                     dtype=torch.uint8) for d in range(8))
    eight = str(tmp_path / 'eight_gpus.pth')
    torch.save(ckpt, eight)
    resumed = whole.copy()
    resumed.work_dir = str(tmp_path / 'resumed')
    resumed.dump(str(tmp_path / 'resumed.py'))
    log = run_train(str(tmp_path / 'resumed.py'), '--resume', eight)
    if torch.cuda.is_available():
        assert 'restored that of device 0' in log, log[-3000:]
    else:
        assert ('the checkpoint holds the CUDA random states of 8 devices'
                in log and 'no GPU: not restored' in log), log[-3000:]
    after, reference = losses(resumed.work_dir), losses(whole.work_dir)
    assert sorted(after) == [3, 4]
    for i in after:
        assert after[i] == reference[i], (i, after[i], reference[i])

    # Saved by 2 ranks; read here through MMEngine's InfiniteSampler, which
    # cannot start at a position: the loop says so and replays the batches.
    ckpt['meta']['random_states'] = [state, state]
    two = str(tmp_path / 'two_ranks.pth')
    torch.save(ckpt, two)
    resumed.work_dir = str(tmp_path / 'resumed_two')
    resumed.train_dataloader.sampler.type = 'InfiniteSampler'
    resumed.dump(str(tmp_path / 'resumed_two.py'))
    log = run_train(str(tmp_path / 'resumed_two.py'), '--resume', two)
    assert 'random states of 2 ranks, this run has 1' in log, log[-3000:]
    assert ('InfiniteSampler (batched by BatchSampler) cannot start at a '
            'given sample: the 2 trained batches go through the data '
            'pipeline again') in log, log[-3000:]
    assert sorted(losses(resumed.work_dir)) == [3, 4]


def test_samples_are_seeded_by_their_draw():
    """A sample's random draws depend on its draw alone, not on what was
    loaded before it; the caller's generators are left as they were."""

    class Noisy:
        def __len__(self):
            return 5

        def __getitem__(self, index):
            return (index, random.random(), float(np.random.rand()),
                    float(torch.rand(())))

    dataset = Noisy()
    sampler = ResumableInfiniteSampler(dataset, seed=3)
    stream = [next(sampler.indices) for _ in range(12)]
    before = (random.getstate(), np.random.get_state()[1].copy(),
              torch.get_rng_state())
    first = dataset.__getitems__(stream[:6])
    again = dataset.__getitems__(stream[4:12])  # other history
    assert first[4:] == again[:2]
    assert len({item[1:] for item in first + again}) == 12  # 12 draws
    assert random.getstate() == before[0]
    assert np.array_equal(np.random.get_state()[1], before[1])
    assert torch.equal(torch.get_rng_state(), before[2])
