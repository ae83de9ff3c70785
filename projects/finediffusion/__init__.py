"""FineDiffusion for MMagic.

Importing the package registers its modules into MMagic's registries
(``custom_imports=dict(imports=['finediffusion'])`` in a config does it for
the MMEngine Runner). :mod:`finediffusion.compat` runs first, so that the
OpenMMLab stack works on current torch and numpy.
"""
from . import compat  # noqa: F401,I001  (must precede every mmagic import)
from . import weights_only  # noqa: F401,I001,E402  (before any load)
from . import datasets, engine, evaluation, models  # noqa: F401,E402

__version__ = '0.1.0'
