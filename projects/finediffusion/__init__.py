"""FineDiffusion for MMagic.

Importing the package registers its modules into MMagic's registries
(``custom_imports=dict(imports=['finediffusion'])`` in a config does it for
the MMEngine Runner). :mod:`finediffusion.compat` runs first, so that the
OpenMMLab stack works on current torch and numpy.

The datasets and transforms (:mod:`finediffusion.datasets`) are imported
when MMagic's ``DATASETS`` or ``TRANSFORMS`` registry is first searched, the
way MMEngine imports MMagic's own (a registry's import locations), so that
the models, hooks and metrics do not depend on them.
"""
from importlib import import_module

from . import compat  # noqa: F401,I001  (must precede every mmagic import)
from . import weights_only  # noqa: F401,I001,E402  (before any load)
from mmagic.registry import DATASETS, TRANSFORMS  # noqa: E402
from . import engine, evaluation, models  # noqa: F401,E402

__version__ = '0.1.0'

_DATASETS = 'finediffusion.datasets'

for _registry in (DATASETS, TRANSFORMS):
    if _registry._imported:
        # Searched already: its locations will not be imported again.
        import_module(_DATASETS)
    elif _DATASETS not in _registry._locations:
        _registry._locations.append(_DATASETS)
