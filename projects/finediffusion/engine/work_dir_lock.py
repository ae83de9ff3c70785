"""One training run per work dir: a second run is refused while the first
holds it.

Two runs on one work dir write the same ``iter_N.pth`` files: the second
replaces the first's checkpoints, or their writes interleave. Every
``Runner.train`` of the plugin holds an exclusive ``flock`` on
``WORK_DIR/train.lock`` while it trains. The operating system releases it
when the process ends, a SIGKILL included, so a killed run leaves no stale
lock and ``--resume`` takes the work dir over at once.
"""
import contextlib
import errno
import fcntl
import os
import os.path as osp
from typing import Iterator

from mmengine.runner import Runner

LOCK_FILE = 'train.lock'


class WorkDirInUseError(RuntimeError):
    """Another process trains in the work dir."""


@contextlib.contextmanager
def hold_work_dir(work_dir: str) -> Iterator[str]:
    """Holds ``work_dir`` for this process while the block runs.

    The lock file is left in place on release: removing it would let a
    process that opened it before the removal lock a file no one else sees.

    Args:
        work_dir (str): The run's work dir (created if absent).

    Yields:
        str: The lock file's path.

    Raises:
        WorkDirInUseError: When another process holds it; the message names
            the work dir and that process's id.
    """
    os.makedirs(work_dir, exist_ok=True)
    path = osp.join(work_dir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode(errors='replace').strip()
            raise WorkDirInUseError(
                f'the work dir {work_dir} is in use by another training run '
                f'(process {holder or "?"} holds {path}); wait for it to end, '
                'or give this run another --work-dir') from None
        # Who holds it, for the message above; the lock itself is the flock.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the flock


_train = Runner.train


def _train_holding_work_dir(self: Runner, *args, **kwargs):
    """``Runner.train`` holding the work dir on rank 0, the rank that writes
    checkpoints (the other ranks of the same run share its work dir)."""
    if self.rank != 0:
        return _train(self, *args, **kwargs)
    with hold_work_dir(self.work_dir):
        return _train(self, *args, **kwargs)


Runner.train = _train_holding_work_dir
