"""Every checkpoint MMEngine reads for the product is read with
``weights_only=True``, whatever the environment says.

MMEngine 0.10.7 calls ``torch.load`` without ``weights_only`` (``--resume``,
``load_from``, ``tools/test.py``, ``init_cfg`` and mmpretrain's
``init_model``), so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, the workaround
MMEngine users on torch >= 2.6 are told to set, turns every such load into a
full unpickling that runs a hostile file's code. Its ``http(s)://`` loader
(also behind ``torchvision://``, ``open-mmlab://``, ``mmcls://``) goes through
``torch.hub.load_state_dict_from_url``, whose ``weights_only`` defaults to
False even without the variable. Passing ``weights_only=True`` explicitly
wins over the variable; the types MMEngine itself writes are allowed by
:mod:`finediffusion.compat`.

Installed into MMEngine by :func:`finediffusion.compat.fix_runner` when
``finediffusion`` is imported (every tool and config of the project imports
it before a Runner loads anything).
"""
import pickle
import types
from typing import Any, Optional

import torch


def load_weights(f: Any, map_location: Any = None, **kwargs: Any) -> Any:
    """``torch.load`` with ``weights_only=True``, even when the caller or
    the environment asks otherwise.

    Args:
        f: A path or a file object, as ``torch.load`` takes.
        map_location: As ``torch.load``'s.
        **kwargs: Other ``torch.load`` arguments; ``weights_only`` is
            replaced.

    Returns:
        The loaded object: tensors, containers and allowed types only.

    Raises:
        pickle.UnpicklingError: When the file holds any other object; the
            message names the file and the object's type.
    """
    kwargs['weights_only'] = True
    try:
        return torch.load(f, map_location=map_location, **kwargs)
    except pickle.UnpicklingError as error:
        # torch's message names the type but not the file.
        raise pickle.UnpicklingError(
            f'{getattr(f, "name", f)}: {error}') from None


def load_url_weights_only(url: str,
                          model_dir: Optional[str] = None,
                          map_location: Any = None,
                          progress: bool = True,
                          **kwargs: Any) -> Any:
    """MMEngine's ``load_url`` (torch.hub's download and cache) reading the
    file with ``weights_only=True``."""
    kwargs['weights_only'] = True
    return torch.hub.load_state_dict_from_url(
        url, model_dir=model_dir, map_location=map_location,
        progress=progress, **kwargs)


class TorchLoadingWeightsOnly(types.ModuleType):
    """``torch`` as MMEngine's checkpoint module sees it: the same module
    except that ``load`` is :func:`load_weights`. Replacing the module's
    name covers every loader registered there (local files, pavi, s3/petrel,
    open-mmlab's local files) without rewriting them."""

    load = staticmethod(load_weights)

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

