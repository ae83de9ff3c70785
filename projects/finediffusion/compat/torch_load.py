"""MMEngine's checkpoints under torch >= 2.6's ``weights_only`` loading."""
from types import ModuleType

import numpy as np
import torch


def _history_buffer_state(self) -> dict:
    """HistoryBuffer's pickled state without its table of methods.

    MMEngine 0.10.7 pickles ``HistoryBuffer._statistics_methods`` (functions
    such as ``HistoryBuffer.min``) into every checkpoint. Loading functions
    needs ``getattr`` in the unpickler, which ``weights_only`` rightly refuses
    and which would let a file reach any attribute of an allowed type. The
    table is class-level and rebuilt at construction and in ``__setstate__``,
    so leaving it out loses nothing.
    """
    return {k: v for k, v in vars(self).items() if k != 'statistics_methods'}


def allow_mmengine_types(history_buffer: ModuleType) -> None:
    """Allows exactly the types MMEngine itself writes into a checkpoint.

    torch 2.6 made ``weights_only=True`` the default of ``torch.load``, which
    MMEngine calls without the argument for ``resume`` and ``load_from``: its
    checkpoints then fail with "Weights only load failed"
    (open-mmlab/mmengine#1621). We keep ``weights_only`` and allow the
    message hub's HistoryBuffer and the numpy arrays and scalars in it, so a
    file holding anything else, such as a downloaded one, is still refused.
    numpy 1 pickles name numpy.core, numpy 2 pickles numpy._core.
    """
    buffer = history_buffer.HistoryBuffer
    buffer.__getstate__ = _history_buffer_state
    multiarray = np._core.multiarray
    torch.serialization.add_safe_globals([
        buffer, np.ndarray, np.dtype, multiarray._reconstruct,
        multiarray.scalar,
        (multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),
        (multiarray.scalar, 'numpy.core.multiarray.scalar')
    ] + [type(np.dtype(code)) for code in np.typecodes['All']])
