"""Building a sampler-ready FineDiffusion from a config and trained weights,
and the inference precision options of the tools."""
import argparse
import json
import os.path as osp
import pickle
from typing import Optional, Union

import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from safetensors import SafetensorError, safe_open

from mmagic.registry import MODELS
from .config import load_config
from .delta import (checkpoint_taxonomy, delta_taxonomy, is_peft_checkpoint,
                    load_delta, peft_state_dict, require_shapes)
from .models.dit_checkpoint import save_official_dit
from .taxonomy import (Taxonomy, TaxonomyLike, check_same_taxonomy,
                       spec_taxonomy, taxonomy_of)
from .weights_only import load_weights


def add_precision_arguments(parser: argparse.ArgumentParser) -> None:
    """``--precision`` and ``--no-compile``, as ``tools/sample.py`` and
    ``tools/test.py`` take them (see :func:`apply_precision`)."""
    parser.add_argument('--precision', choices=['bfloat16', 'float32'],
                        default=None,
                        help='bfloat16: bf16 weights for the backbone; '
                        "float32: float32 throughout, the config's "
                        'model.autocast off. Default: bfloat16 on a GPU, '
                        'the config as it is on the CPU')
    parser.add_argument('--no-compile', action='store_true',
                        help='run the backbone eagerly even where the '
                        "config's model.compile asks for torch.compile (on "
                        'GPUs in the shipped configs)')


def apply_precision(cfg: Config, args: argparse.Namespace,
                    on_gpu: bool) -> Optional[str]:
    """Applies ``--no-compile`` and ``--precision float32`` to the model
    config (float32 also turns the config's autocast off, which would
    still compute in bf16).

    Returns:
        str, optional: 'bfloat16' when the model's backbone is to be cast
        to bf16 weights (:meth:`FineDiffusion.cast_backbone`): asked for, or
        the default on a GPU (a FineDiffusion only); None otherwise.

    Raises:
        SystemExit: When a flag is given for a model other than
            FineDiffusion, naming its type.
    """
    model_type = str(cfg.model.get('type'))
    if model_type.split('.')[-1] != 'FineDiffusion':
        if args.no_compile or args.precision:
            raise SystemExit(f'error: --precision and --no-compile apply to '
                             f'FineDiffusion, the config builds {model_type}')
        return None
    if args.no_compile:
        cfg.model.compile = False
    precision = args.precision or ('bfloat16' if on_gpu else None)
    if precision == 'float32':
        cfg.model.autocast = None
    return precision if precision == 'bfloat16' else None


def check_weights_taxonomy(config: Union[str, Config],
                           saved: Optional[TaxonomyLike], source: str) -> None:
    """Compares the taxonomy saved with trained weights (a checkpoint's or
    a delta's) with the one the config's model reads, before loading them.

    Args:
        config (str or Config): The config (its ``model.backbone.taxonomy``);
            a path is read by :func:`finediffusion.config.load_config`.
        saved (Taxonomy or Sequence[int], optional): From
            :func:`checkpoint_taxonomy` or :func:`delta_taxonomy`; None
            skips the check.
        source (str): The weights, for the message (e.g. 'the delta X').

    Raises:
        ValueError: At the first subclass that differs, naming it, both
            superclasses and both sources.
    """
    cfg = load_config(config) if isinstance(config, str) else config
    spec = cfg.model.get('backbone', {}).get('taxonomy')
    if saved is None or spec is None:
        return
    expected, where = spec_taxonomy(spec)
    check_same_taxonomy(expected, saved, f"the config's taxonomy ({where})",
                        source)


def build_model(config: Union[str, Config], base: Optional[str] = None):
    """The config's FineDiffusion, holding the base weights."""
    cfg = load_config(config) if isinstance(config, str) else config
    model_cfg = cfg.model.copy()
    if base is not None:
        model_cfg.backbone.pretrained = base
    with DefaultScope.overwrite_default_scope('mmagic'):
        return MODELS.build(model_cfg)


def build_from_delta(config: Union[str, Config],
                     delta: str,
                     base: Optional[str] = None,
                     device: Union[str, torch.device] = 'cpu'):
    """The config's model, with the official base weights and a delta.

    Args:
        config (str or Config): The training config (its ``model``); a
            path is read by :func:`finediffusion.config.load_config`.
        delta (str): A delta written by ``tools/export_delta.py``.
        base (str, optional): The official DiT checkpoint; defaults to the
            config's ``model.backbone.pretrained``.
        device (str or torch.device): Where the model goes.

    Returns:
        FineDiffusion: In eval mode.
    """
    config = load_config(config) if isinstance(config, str) else config
    check_weights_taxonomy(config, delta_taxonomy(delta), f'the delta {delta}')
    model = build_model(config, base)
    load_delta(model, delta)
    return model.to(device).eval()


def load_for_sampling(
        config: Union[str, Config],
        weights: str,
        base: Optional[str] = None,
        device: Union[str, torch.device] = 'cpu'):
    """A model and its taxonomy from a delta or a training checkpoint.

    Args:
        config (str or Config): The training config; a path is read by
            :func:`finediffusion.config.load_config`.
        weights (str): A ``.safetensors`` delta, or a ``.pth`` checkpoint
            written by a training run of this project (PEFT-trimmed or full).
        base (str, optional): The official DiT checkpoint; defaults to the
            config's ``model.backbone.pretrained``.
        device (str or torch.device): Where the model goes.

    Returns:
        tuple: The FineDiffusion (eval mode) and its :class:`Taxonomy`.

    Raises:
        FileNotFoundError: When ``weights`` is no file.
        ValueError: When the delta or the PEFT checkpoint lacks a tensor
            that its metadata declares (the message names them), a tensor
            has another shape, or the file is no checkpoint or delta this
            model can load (unreadable, truncated, of another model); the
            message names the file and the cause.
    """
    if not isinstance(weights, str) or not osp.isfile(weights):
        raise FileNotFoundError(f'weights file not found: {weights!r}')
    config = load_config(config) if isinstance(config, str) else config
    try:
        return _load_for_sampling(config, weights, base, device)
    except (pickle.UnpicklingError, EOFError, SafetensorError,
            RuntimeError) as error:
        cause = str(error).strip().splitlines()[0][:300] if str(error) \
            else type(error).__name__
        # Not torch's advice to retry with weights_only=False: the file
        # is not one of ours, or damaged.
        raise ValueError(f'{weights} is not a readable checkpoint or delta '
                         f'of this model: {cause}') from error


def _load_for_sampling(config: Config, weights: str, base: Optional[str],
                       device: Union[str, torch.device]) -> tuple:
    """:func:`load_for_sampling` on a loaded config and an existing file."""
    if weights.endswith('.safetensors'):
        model = build_from_delta(config, weights, base, device)
        with safe_open(weights, framework='pt') as f:
            meta = f.metadata() or {}
        taxonomy = (Taxonomy.from_dict(json.loads(meta['taxonomy']))
                    if 'taxonomy' in meta else None)
    else:
        ckpt = load_weights(weights, map_location='cpu')
        check_weights_taxonomy(config, checkpoint_taxonomy(ckpt),
                               f'the checkpoint {weights}')
        model = build_model(config, base)
        state = ckpt.get('state_dict', ckpt)
        peft = is_peft_checkpoint(ckpt)
        if peft:
            # Checked against its meta.peft; frozen tensors are the base's.
            state = peft_state_dict(model, ckpt, weights)
        require_shapes(state, model.state_dict(), weights)
        # A PEFT state may hold tensors of a wider trainable set than the
        # config's (e.g. the EMA of a tensor this config freezes).
        model.load_state_dict(state, strict=not peft)
        taxonomy = taxonomy_of(
            ckpt.get('meta', {}).get('dataset_meta'),
            model.backbone.sub2super.tolist())
        model = model.to(device).eval()
    if taxonomy is None:
        taxonomy = Taxonomy.unnamed(model.backbone.sub2super.tolist())
    return model, taxonomy


def export_base(config: Union[str, Config], checkpoint: str, out: str,
                use_ema: bool = True) -> int:
    """Writes a TieredDiT trained with this project as an official-layout
    DiT state dict, which ``TieredDiT(pretrained=...)`` loads like the
    released checkpoints (its class table is dropped).

    This is how the demo's base model, pretrained on the synthetic stand-in
    for ImageNet, becomes the starting point of FineDiffusion.

    Args:
        config (str or Config): The pretraining config.
        checkpoint (str): A checkpoint of that run.
        out (str): Output ``.pth``.
        use_ema (bool): Write the EMA weights. Defaults to True.

    Returns:
        int: Number of tensors written.
    """
    model, _ = load_for_sampling(config, checkpoint)
    return save_official_dit(model, out, use_ema)
