"""scipy 1.18 removed ``sqrtm(disp=)``, which MMagic's FID uses."""
import functools
import inspect
from types import ModuleType

import numpy as np


def sqrtm_accepting_disp(sqrtm):
    """``scipy.linalg.sqrtm`` with the ``disp`` argument scipy 1.18 removed.

    MMagic's FID calls ``sqrtm(x, disp=False)`` and unpacks (root, error);
    on scipy >= 1.18 that raises TypeError. ``disp=False`` returns the root
    and the error estimate old scipy returned: ||root @ root - x||_F / ||x||_F.
    """

    @functools.wraps(sqrtm)
    def wrapped(a, disp=True, **kwargs):
        root = sqrtm(a, **kwargs)
        if disp:
            return root
        return root, np.linalg.norm(root @ root - a) / np.linalg.norm(a)

    wrapped.accepts_disp = True
    return wrapped


def fix_sqrtm(linalg: ModuleType) -> None:
    """Wraps ``scipy.linalg.sqrtm`` where it lacks ``disp``."""
    if getattr(linalg.sqrtm, 'accepts_disp', False):
        return  # functools.wraps shows the wrapped signature, without disp
    if 'disp' not in inspect.signature(linalg.sqrtm).parameters:
        linalg.sqrtm = sqrtm_accepting_disp(linalg.sqrtm)
