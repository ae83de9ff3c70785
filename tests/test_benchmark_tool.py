"""tools/benchmark.py's handling of the tools it runs, and the loss-curve
benchmark's arithmetic."""
import importlib.util
import os.path as osp
import time

import pytest

from conftest import REPO, load_tool


def test_a_stalled_tool_leaves_its_stacks_and_no_process(tmp_path):
    # A stalled training run once used up a whole device call and left no
    # log: the stall is stopped, its stacks logged, its children killed,
    # also one in a session of its own (torchrun starts its ranks so).
    child_pid = tmp_path / 'child.pid'
    script = tmp_path / 'stall.py'
    script.write_text(
        'import subprocess, sys, time\n'
        'children = [subprocess.Popen([sys.executable, "-c", '
        '"import time; time.sleep(600)"], start_new_session=new) '
        'for new in (False, True)]\n'
        f'open({str(child_pid)!r}, "w").write('
        '" ".join(str(c.pid) for c in children))\n'
        'def waiting_for_the_loader():\n'
        '    time.sleep(600)\n'
        'waiting_for_the_loader()\n')
    log = tmp_path / 'stall.log'
    began = time.monotonic()
    with pytest.raises(SystemExit, match='stopped after 20 s'):
        load_tool('benchmark').run_tool([str(script)], str(log), timeout=20)
    assert time.monotonic() - began < 60
    text = log.read_text()
    assert 'waiting_for_the_loader' in text, text
    pids = [int(pid) for pid in child_pid.read_text().split()]
    assert len(pids) == 2 and not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie left to an init that does not reap
    has ended)."""
    time.sleep(0.5)
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except FileNotFoundError:
        return False


def test_a_finished_tool_gives_its_wall_time(tmp_path):
    script = tmp_path / 'quick.py'
    script.write_text('print("done")\n')
    log = tmp_path / 'quick.log'
    wall = load_tool('benchmark').run_tool([str(script)], str(log), timeout=60)
    assert 0 < wall < 60 and log.read_text() == 'done\n'


def test_loss_curve_windows_and_logs(tmp_path):
    """benchmarks/loss_curve.py reads every logged loss of a run and
    compares window means, not single iterations."""
    spec = importlib.util.spec_from_file_location(
        'loss_curve', osp.join(REPO, 'benchmarks', 'loss_curve.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # Opposite single-iteration errors cancel within a window.
    assert module.window_distance([0.5, 1.5, 2, 2], [1, 1, 1, 1], 2) == 1.0
    folder = tmp_path / 'run' / '20261204_000000' / 'vis_data'
    folder.mkdir(parents=True)
    (folder / 'scalars.json').write_text(
        '{"lr": 0.1, "loss": 0.9, "step": 1}\n'
        '{"coco/bbox": 1, "step": 1}\n'
        '{"lr": 0.1, "loss": 0.7, "step": 2}\n')
    assert module.losses(str(tmp_path / 'run')) == [0.9, 0.7]
