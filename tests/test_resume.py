"""A training run killed with SIGKILL resumes from its last checkpoint on
the loss curve of an uninterrupted run, with the same optimizer and EMA."""
import glob
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import torch

from conftest import REPO
from finediffusion.engine import latest_checkpoint
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
