"""Building a sampler-ready FineDiffusion from a config, a base and a delta."""
from typing import Optional, Union

import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmagic.registry import MODELS
from .models.checkpoint_io import load_delta


def build_from_delta(config: Union[str, Config],
                     delta: str,
                     base: Optional[str] = None,
                     device: Union[str, torch.device] = 'cpu'):
    """The config's model, with the official base weights and a delta.

    Args:
        config (str or Config): The training config (its ``model``).
        delta (str): A delta written by ``tools/export_delta.py``.
        base (str, optional): The official DiT checkpoint; defaults to the
            config's ``model.backbone.pretrained``.
        device (str or torch.device): Where the model goes.

    Returns:
        FineDiffusion: In eval mode.
    """
    cfg = Config.fromfile(config) if isinstance(config, str) else config
    model_cfg = cfg.model.copy()
    if base is not None:
        model_cfg.backbone.pretrained = base
    with DefaultScope.overwrite_default_scope('mmagic'):
        model = MODELS.build(model_cfg)
    load_delta(model, delta)
    return model.to(device).eval()
