"""Two training runs on one work dir: the second is refused while the first
trains, naming the work dir, and loses none of the first's checkpoints; a
killed run leaves no stale lock; temporary checkpoint files are per
process."""
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest
import torch
from mmengine.runner import Runner
from mmengine.runner import runner as mmengine_runner

from conftest import REPO


def checkpoints(work_dir):
    return {name: os.stat(osp.join(work_dir, name)).st_mtime_ns
            for name in os.listdir(work_dir) if name.endswith('.pth')}


def test_second_run_on_a_work_dir_is_refused(tiny_cfg, tmp_path):
    first = tiny_cfg.copy()
    first.train_cfg.max_iters = 100000
    first.default_hooks.checkpoint.interval = 1
    config = str(tmp_path / 'cfg.py')
    first.dump(config)
    run = subprocess.Popen(
        [sys.executable, osp.join(REPO, 'tools/train.py'), config],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        deadline = time.time() + 300
        while not osp.isfile(osp.join(first.work_dir, 'iter_2.pth')):
            assert run.poll() is None, run.stderr.read()[-3000:]
            assert time.time() < deadline
            time.sleep(0.02)
        # The first run holds the work dir: stop it where it is, so that
        # what it has written can be compared.
        os.killpg(run.pid, signal.SIGSTOP)
        before = checkpoints(first.work_dir)

        second = tiny_cfg.copy()
        second.train_cfg.max_iters = 2
        second.default_hooks.checkpoint.interval = 1
        second.experiment_name = 'second'
        with pytest.raises(RuntimeError,
                           match=f'{first.work_dir} is in use by another '
                           f'training run \\(process {run.pid} '):
            Runner.from_cfg(second).train()
        assert checkpoints(first.work_dir) == before
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()

    # Killed, the first run holds nothing: resuming in its work dir trains.
    resumed = tiny_cfg.copy()
    resumed.train_cfg.max_iters = max(
        int(n[5:-4]) for n in before if n.startswith('iter_')) + 1
    resumed.resume = True
    resumed.experiment_name = 'resumed'
    runner = Runner.from_cfg(resumed)
    runner.train()
    assert runner.iter == resumed.train_cfg.max_iters


def test_partial_checkpoint_files_are_per_process(tmp_path):
    """Another process writing iter_4.pth keeps its temporary file."""
    save = mmengine_runner.save_checkpoint  # what the Runner calls
    target = str(tmp_path / 'iter_4.pth')
    others = [target + '.partial', f'{target}.{os.getpid() + 1}.partial']
    for other in others:
        with open(other, 'wb') as f:
            f.write(b'another run, half written')
    save({'meta': {'iter': 4}}, target)
    assert torch.load(target)['meta']['iter'] == 4
    for other in others:
        with open(other, 'rb') as f:
            assert f.read() == b'another run, half written', other
    assert sorted(os.listdir(tmp_path)) == sorted(
        ['iter_4.pth'] + [osp.basename(o) for o in others])
