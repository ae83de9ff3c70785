"""numpy 2 removed names that mmagic and mmpretrain 1.2.0 still use."""
import functools
from types import ModuleType

import numpy as np


def in1d(ar1, ar2, assume_unique: bool = False, invert: bool = False,
         **kwargs) -> np.ndarray:
    """``np.in1d`` (removed in numpy 2.4): ``np.isin`` on the flattened
    first argument, the documented replacement. mmpretrain's retrieval
    metrics call it."""
    return np.isin(np.ravel(ar1), ar2, assume_unique=assume_unique,
                   invert=invert, **kwargs)


def accepting_interpolation(function):
    """``np.percentile`` / ``np.quantile`` accepting ``interpolation=``,
    renamed ``method=`` in numpy 1.22 and removed in 2.4. MMagic's PPL
    metric calls ``np.percentile(..., interpolation='lower')``."""
    if getattr(function, 'accepts_interpolation', False):
        return function

    @functools.wraps(function)
    def wrapped(*args, interpolation=None, **kwargs):
        if interpolation is not None:
            if 'method' in kwargs:
                raise TypeError('interpolation= and method= are the same '
                                'argument; pass method= only')
            kwargs['method'] = interpolation
        return function(*args, **kwargs)

    wrapped.accepts_interpolation = True
    return wrapped


def fix_numpy(module: ModuleType = None) -> None:
    """Restores ``np.bool8`` (mmagic/utils/trans_utils.py uses it in a
    module-level dict, so ``import mmagic.models`` fails without it),
    ``np.in1d`` and the ``interpolation=`` argument. Called when MMEngine is
    imported, before any code of mmcv, mmagic or mmpretrain runs."""
    if not hasattr(np, 'bool8'):
        np.bool8 = np.bool_
    if not hasattr(np, 'in1d'):
        np.in1d = in1d
    np.percentile = accepting_interpolation(np.percentile)
    np.quantile = accepting_interpolation(np.quantile)
