"""Runs of the project's tools as subprocesses, as tools/demo.py and the
benchmarks start tools/train.py: the output to a log, the log's end on a
failure, and what the Runner logged (``vis_data/scalars.json``)."""
import json
import os
import os.path as osp
import subprocess
import time
from typing import Dict, List, Optional, Sequence

import numpy as np


class ToolFailed(RuntimeError):
    """A command exited with a non-zero status; the message holds the end
    of its log."""


def run_logged(args: Sequence[str],
               log: str,
               env: Optional[Dict[str, str]] = None,
               tail_lines: int = 30) -> float:
    """Runs a command to its end, its output (stdout and stderr) to ``log``.

    Args:
        args (Sequence[str]): The command, e.g. ``[sys.executable,
            'tools/train.py', CONFIG]``.
        log (str): The log file, overwritten; its folder is created.
        env (dict, optional): The environment. Defaults to this process's.
        tail_lines (int): Lines of the log in a failure's message. Defaults
            to 30.

    Returns:
        float: Wall time in seconds, rounded to 0.1 s.

    Raises:
        ToolFailed: For a non-zero exit status, naming the script
            (``args[1]``), the status and the log.
    """
    os.makedirs(osp.dirname(log) or '.', exist_ok=True)
    start = time.time()
    with open(log, 'w') as f:
        code = subprocess.call(list(args), stdout=f,
                               stderr=subprocess.STDOUT, env=env)
    if code:
        with open(log) as f:
            tail = ''.join(f.readlines()[-tail_lines:])
        script = osp.basename(args[1] if len(args) > 1 else args[0])
        raise ToolFailed(f'{script} failed ({code}); end of {log}:\n{tail}')
    return round(time.time() - start, 1)


def logged_scalars(work_dir: str, key: str) -> List[float]:
    """The values of ``key`` in the training records (those with a
    ``loss``) that the Runner logged under ``work_dir``.

    Args:
        work_dir (str): A run's work dir; every ``scalars.json`` below it
            is read, in folder order (one timestamped folder per run).
        key (str): E.g. 'loss', or 'time' (seconds per iteration).

    Returns:
        list[float]: One value per logged training record that has it.
    """
    values = []
    for folder, _, files in sorted(os.walk(work_dir)):
        if 'scalars.json' in files:
            with open(osp.join(folder, 'scalars.json')) as f:
                records = [json.loads(line) for line in f]
            values += [r[key] for r in records if 'loss' in r and key in r]
    return values


def train_speed(work_dir: str, batch_size: int) -> float:
    """Training images per second from the logged iteration times, the
    first logged window (with the start-up) left out.

    Args:
        work_dir (str): The run's work dir.
        batch_size (int): Images per iteration.

    Returns:
        float: Images per second; NaN when nothing was logged.
    """
    times = logged_scalars(work_dir, 'time')
    times = times[1:] or times
    return batch_size / float(np.mean(times)) if times else float('nan')
