"""Makes MMagic 1.2.0, MMEngine 0.10.7 and mmcv 2.1.0 run on current torch
and numpy.

The OpenMMLab stack is unmaintained since 2023-24. ``finediffusion``
imports this module before anything else; in the project's environment a
``.pth`` line also runs it at interpreter start (``tools/setup_env.sh``), so
that a plain ``import mmagic.models`` works there too. Every fix is
idempotent and says what breaks without it.

The fixes of ``mmengine.runner`` are in :func:`fix_runner`, which
``finediffusion`` calls when it is imported: importing ``mmengine.runner``
at every interpreter start would cost every Python process a second.
"""
import inspect
import os

import numpy as np
import scipy.linalg
import torch
from mmengine.logging.history_buffer import HistoryBuffer

# numpy 2 removed the alias np.bool8 (deprecated in numpy 1.24):
# mmagic/utils/trans_utils.py uses it in a module-level dict, so
# `import mmagic.models` raises AttributeError.
if not hasattr(np, 'bool8'):
    np.bool8 = np.bool_


def _history_buffer_state(self: HistoryBuffer) -> dict:
    """HistoryBuffer's pickled state without its table of methods.

    MMEngine 0.10.7 pickles ``HistoryBuffer._statistics_methods`` (functions
    such as ``HistoryBuffer.min``) into every checkpoint. Loading functions
    needs ``getattr`` in the unpickler, which ``weights_only`` rightly refuses
    and which would let a file reach any attribute of an allowed type. The
    table is class-level and rebuilt at construction and in ``__setstate__``,
    so leaving it out loses nothing.
    """
    return {k: v for k, v in vars(self).items() if k != 'statistics_methods'}


# torch 2.6 made weights_only=True the default of torch.load, which MMEngine
# calls without the argument for `resume` and `load_from`: its checkpoints
# then fail with "Weights only load failed" (open-mmlab/mmengine#1621). We
# keep weights_only and allow exactly the types MMEngine itself writes (the
# message hub's HistoryBuffer and the numpy arrays and scalars in it), so a
# file holding anything else, such as a downloaded one, is still refused.
# numpy 1 pickles name numpy.core, numpy 2 pickles numpy._core.
HistoryBuffer.__getstate__ = _history_buffer_state
_multiarray = np._core.multiarray
torch.serialization.add_safe_globals([
    HistoryBuffer, np.ndarray, np.dtype, _multiarray._reconstruct,
    _multiarray.scalar,
    (_multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),
    (_multiarray.scalar, 'numpy.core.multiarray.scalar')
] + [type(np.dtype(code)) for code in np.typecodes['All']])


def sqrtm_accepting_disp(sqrtm):
    """``scipy.linalg.sqrtm`` with the ``disp`` argument scipy 1.18 removed.

    MMagic's FID calls ``sqrtm(x, disp=False)`` and unpacks (root, error);
    on scipy >= 1.18 that raises TypeError. ``disp=False`` returns the root
    and the error estimate old scipy returned: ||root @ root - x||_F / ||x||_F.
    """

    def wrapped(a, disp=True, **kwargs):
        root = sqrtm(a, **kwargs)
        if disp:
            return root
        return root, np.linalg.norm(root @ root - a) / np.linalg.norm(a)

    return wrapped


if 'disp' not in inspect.signature(scipy.linalg.sqrtm).parameters:
    scipy.linalg.sqrtm = sqrtm_accepting_disp(scipy.linalg.sqrtm)


def _atomic(save_checkpoint):
    """MMEngine's ``save_checkpoint``, writing ``<file>.<pid>.partial`` then
    renaming.

    A run killed while writing leaves the previous checkpoints and a
    ``.partial`` file, never a truncated checkpoint under a real name. The
    process id keeps two writers of one name (two runs on one work dir, if
    one bypasses :mod:`finediffusion.engine.work_dir_lock`) from renaming
    each other's files.
    """

    def atomic_save_checkpoint(checkpoint: dict, filename: str, *args,
                               **kwargs) -> None:
        if '://' in str(filename):  # remote backends keep their semantics
            return save_checkpoint(checkpoint, filename, *args, **kwargs)
        partial = f'{filename}.{os.getpid()}.partial'
        save_checkpoint(checkpoint, partial, *args, **kwargs)
        os.replace(partial, filename)

    atomic_save_checkpoint.atomic = True
    return atomic_save_checkpoint


def fix_runner() -> None:
    """The fixes of ``mmengine.runner``, applied once per process.

    - Checkpoints are written atomically (:func:`_atomic`): MMEngine writes
      them in place, so a killed run can leave a truncated ``iter_N.pth``
      that ``--resume`` then fails on. The Runner calls the name it
      imported, which is replaced.
    - Every checkpoint MMEngine reads is read with ``weights_only=True``
      (:mod:`finediffusion.weights_only`): its ``torch.load`` calls pass no
      ``weights_only``, so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` would
      unpickle any file, and its URL loader defaults to full unpickling.
    """
    from mmengine.runner import checkpoint as mmengine_checkpoint
    from mmengine.runner import runner as mmengine_runner

    from .weights_only import TorchLoadingWeightsOnly, load_url_weights_only
    if not getattr(mmengine_runner.save_checkpoint, 'atomic', False):
        mmengine_runner.save_checkpoint = _atomic(
            mmengine_runner.save_checkpoint)
    mmengine_checkpoint.torch = TorchLoadingWeightsOnly('torch')
    mmengine_checkpoint.load_url = load_url_weights_only
