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

from . import compat  # noqa: I001  (must precede every mmagic import)

compat.fix_runner()  # before any checkpoint is written or read

from mmagic.registry import DATASETS, TRANSFORMS  # noqa: E402
from . import engine, evaluation, models  # noqa: F401,E402

__version__ = '0.1.0'


def _import_datasets_on_first_use() -> None:
    """Adds :mod:`finediffusion.datasets` to the import locations of
    MMagic's ``DATASETS`` and ``TRANSFORMS``; imports it now if either was
    searched already (a registry imports its locations once)."""
    name = 'finediffusion.datasets'
    for registry in (DATASETS, TRANSFORMS):
        if registry._imported:
            import_module(name)
        elif name not in registry._locations:
            registry._locations.append(name)


_import_datasets_on_first_use()
