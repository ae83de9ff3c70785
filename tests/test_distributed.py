"""tools/dist_train.sh with 2 processes over gloo on the CPU: PEFT under
MMEngine's DDP keeps the ranks identical and the frozen weights untouched."""
import os
import os.path as osp
import subprocess

import torch

from conftest import REPO, free_port
from test_peft import base, peft_cfg  # noqa: F401  (the base fixture)
from test_resume import run_train


def test_dist_train_two_ranks_gloo(tiny_cfg, base, tmp_path):  # noqa: F811
    cfg = peft_cfg(tiny_cfg, base, iters=3)
    cfg.custom_imports = dict(imports=['finediffusion', 'probes'],
                              allow_failed_imports=False)
    cfg.custom_hooks.append(dict(type='DistProbeHook'))
    cfg.default_hooks.checkpoint.interval = 3
    config = str(tmp_path / 'ddp_cfg.py')
    cfg.dump(config)
    env = dict(os.environ, PORT=free_port(),
               PYTHONPATH=osp.join(REPO, 'tests') + os.pathsep +
               os.environ.get('PYTHONPATH', ''))
    run = subprocess.run(
        ['bash', osp.join(REPO, 'tools/dist_train.sh'), config, '2'],
        capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]

    ranks = [torch.load(osp.join(cfg.work_dir, f'probe_rank{r}.pt'))
             for r in (0, 1)]
    official = torch.load(base)
    trainable = set(ranks[0]['trainable'])
    changed = 0
    for name, value in ranks[0]['params'].items():
        assert torch.equal(value, ranks[1]['params'][name]), name
        if name in trainable:
            changed += not torch.equal(value, official.get(name, value))
        elif name in official:
            assert torch.equal(value, official[name]), name
    assert changed > 0  # training happened
    for name, value in ranks[0]['ema'].items():
        assert torch.equal(value, ranks[1]['ema'][name]), name
    # The ranks split each epoch: their first 16 of 32 samples are disjoint.
    first = [set(r['seen'][:16]) for r in ranks]
    assert len(ranks[0]['seen']) >= 16 and not first[0] & first[1]
    assert first[0] | first[1] == set(range(32))
    # One checkpoint, written once (by rank 0).
    assert osp.isfile(osp.join(cfg.work_dir, 'iter_3.pth'))


def _dist_train(config, *args):
    env = dict(os.environ, PORT=free_port(),
               PYTHONPATH=osp.join(REPO, 'tests') + os.pathsep +
               os.environ.get('PYTHONPATH', ''))
    run = subprocess.run(
        ['bash', osp.join(REPO, 'tools/dist_train.sh'), config, '2', *args],
        capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]


def _seen(work_dir, rank=0):
    return torch.load(osp.join(work_dir, f'probe_rank{rank}.pt'))['seen']


def test_resume_on_another_number_of_gpus(tiny_cfg, base, tmp_path):  # noqa: F811
    """A 2-rank run resumed on 1 process, and a 1-process run resumed on 2
    ranks, train the samples the saved run had not trained, in the order of
    the data stream over all ranks (rank r's p-th sample is draw
    r + p * world_size): none repeated, none skipped."""
    cfg = peft_cfg(tiny_cfg, base, iters=4)
    cfg.custom_imports = dict(imports=['finediffusion', 'probes'],
                              allow_failed_imports=False)
    cfg.custom_hooks.append(dict(type='DistProbeHook'))
    batch = cfg.train_dataloader.batch_size

    def dumped(name, work_dir, max_iters):
        run = cfg.copy()
        run.work_dir = str(work_dir)
        run.train_cfg.max_iters = max_iters
        path = str(tmp_path / f'{name}.py')
        run.dump(path)
        return path

    two, one = tmp_path / 'two', tmp_path / 'one'
    _dist_train(dumped('two', two, 4))
    run_train(dumped('one', one, 4))
    # Draws of the uninterrupted runs, in stream order.
    stream_two = [s for pair in zip(_seen(two, 0), _seen(two, 1))
                  for s in pair]
    stream_one = _seen(one)

    # 2 ranks -> 1 process: iteration 2 trained draws 0 .. 4 * batch - 1.
    log = run_train(dumped('two_on_one', tmp_path / 'two_on_one', 3),
                    '--resume', str(two / 'iter_2.pth'))
    assert 'random states of 2 ranks, this run has 1' in log, log[-3000:]
    assert (_seen(tmp_path / 'two_on_one')[:batch]
            == stream_two[4 * batch:5 * batch])

    # 1 process -> 2 ranks: iteration 2 trained draws 0 .. 2 * batch - 1.
    _dist_train(dumped('one_on_two', tmp_path / 'one_on_two', 3),
                '--resume', str(one / 'iter_2.pth'))
    for rank in (0, 1):
        assert (_seen(tmp_path / 'one_on_two', rank)[:batch]
                == stream_one[2 * batch + rank::2][:batch])
