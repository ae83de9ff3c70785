"""Start-up cost of the project's environment: ``python -c pass`` in the
venv (its .pth lines: the base site, the editable install, the compat
import hook) against the bare interpreter it was made from, and a plain
``import mmagic.models`` (MMEngine, mmcv and MMagic with the fixes).

Prints one JSON line per command: median and minimum of ``--runs`` runs.
Example:
    .venv/bin/python benchmarks/interpreter_start.py --runs 20
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import List


def timed(command: List[str], runs: int) -> List[float]:
    """Wall seconds of each run of ``command``; a failing run raises."""
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--runs', type=int, default=10)
    args = parser.parse_args()
    cases = [
        ('bare interpreter: python -c pass',
         [sys._base_executable, '-c', 'pass'], args.runs),
        ('venv: python -c pass', [sys.executable, '-c', 'pass'], args.runs),
        ('venv: python -c "import mmagic.models"',
         [sys.executable, '-c', 'import mmagic.models'], max(1,
                                                             args.runs // 5)),
    ]
    for name, command, runs in cases:
        seconds = timed(command, runs)
        print(json.dumps(dict(case=name, runs=runs,
                              median_s=round(statistics.median(seconds), 4),
                              min_s=round(min(seconds), 4))))


if __name__ == '__main__':
    main()
