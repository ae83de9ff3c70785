"""Checkpoint files: official DiT weights in, PEFT deltas out and in."""
import json
from typing import List, Optional

import torch
from mmengine.logging import print_log
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..datasets.taxonomy import Taxonomy, TaxonomyLike, taxonomy_of

DELTA_FORMAT = 'finediffusion-delta/1'

# The ImageNet class table (1000 classes + null): FineDiffusion learns a new
# tiered table instead.
IMAGENET_TABLE = 'y_embedder.embedding_table.weight'


def load_official_dit(model: nn.Module, path: str) -> dict:
    """Copies an official DiT state dict into ``model`` by name.

    The file is read with ``weights_only=True``: a downloaded checkpoint is
    never unpickled. The ImageNet class table is skipped, LayerNorm scales
    and offsets and DiffFit block scales, absent from the release, keep their
    identity initialization, and every other tensor must be present with the
    right shape.

    Args:
        model (nn.Module): A :class:`TieredDiT`.
        path (str): Path to e.g. ``DiT-XL-2-256x256.pt``.

    Returns:
        dict: ``skipped`` (checkpoint keys not loaded), ``kept_init``
        (model keys not in the checkpoint, left at their initialization)
        and ``class_table`` (the skipped class table, or None).

    Raises:
        ValueError: When the file is not a DiT state dict, or a tensor is
            missing or has another shape; the message names the key.
    """
    state = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(state, dict) or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f'{path} is not a plain DiT state dict (expected '
                         'a mapping of parameter names to tensors)')
    own = model.state_dict()
    if 'x_embedder.proj.weight' not in state:
        raise ValueError(
            f'{path} is not a DiT checkpoint: key x_embedder.proj.weight is '
            f'missing (first keys: {sorted(state)[:5]})')
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        raise ValueError(f'{path} has keys that a TieredDiT lacks: '
                         f'{unexpected[:10]}')
    skipped = [IMAGENET_TABLE] if IMAGENET_TABLE in state else []
    kept_init = []
    to_load = {}
    for key, value in own.items():
        if key in ('y_embedder.embedding_table.weight', 'y_embedder.sub2super'):
            kept_init.append(key)
        elif key not in state:
            if not _is_new_in_tiered_dit(key):
                raise ValueError(f'{path} lacks key {key} (shape '
                                 f'{tuple(value.shape)})')
            kept_init.append(key)
        elif state[key].shape != value.shape:
            raise ValueError(
                f'{path}: key {key} has shape {tuple(state[key].shape)}, the '
                f'model expects {tuple(value.shape)} (another model size, '
                'patch size, input size or channel count?)')
        else:
            to_load[key] = state[key]
    model.load_state_dict(to_load, strict=False)
    print_log(
        f'Loaded {len(to_load)} tensors from {path}; skipped {skipped}; '
        f'kept {len(kept_init)} at init: {kept_init}', logger='current')
    table = state.get(IMAGENET_TABLE)
    return dict(
        skipped=skipped,
        kept_init=kept_init,
        class_table=table)


def _is_new_in_tiered_dit(key: str) -> bool:
    """Whether ``key`` is a parameter DiT lacks: an affine LayerNorm's scale
    or offset, or a DiffFit block scale (all identity at init)."""
    parts = key.split('.')
    return (len(parts) > 1 and parts[-2] in ('norm1', 'norm2', 'norm_final')
            or parts[-1] in ('scale_attn', 'scale_mlp'))


def delta_keys(model: nn.Module) -> List[str]:
    """State-dict keys a PEFT checkpoint keeps: the trainable parameters and
    every buffer (the EMA, the taxonomy). The rest is the base model's."""
    params = dict(model.named_parameters())
    return [
        key for key in model.state_dict()
        if key not in params or params[key].requires_grad
    ]


def export_delta(checkpoint: str, out: str, use_ema: bool = True) -> dict:
    """Writes the backbone's trained tensors of a training checkpoint as a
    safetensors delta that applies to the official base weights.

    Args:
        checkpoint (str): A checkpoint written by a FineDiffusion training
            run (with :class:`PEFTFreezeHook`).
        out (str): Output ``.safetensors`` path.
        use_ema (bool): Export the EMA weights (what DiT samples with).
            Defaults to True.

    Returns:
        dict: The metadata written with the tensors, the class-name table
        (``taxonomy``) among them.
    """
    ckpt = torch.load(checkpoint, map_location='cpu', weights_only=True)
    meta = ckpt.get('meta', {})
    if 'peft' not in meta:
        raise ValueError(f'{checkpoint} was not written by a FineDiffusion '
                         'run with PEFTFreezeHook (no meta.peft)')
    state = ckpt['state_dict']
    tensors = {}
    for name in meta['peft']['trainable']:
        source = f'ema.{name.replace(".", "__")}' if use_ema else ''
        if source not in state:
            source = f'backbone.{name}'
        tensors[f'backbone.{name}'] = state[source].contiguous()
    sub2super = state['backbone.y_embedder.sub2super']
    tensors['backbone.y_embedder.sub2super'] = sub2super
    taxonomy = taxonomy_of(meta.get('dataset_meta'), sub2super.tolist())
    metadata = dict(
        taxonomy=json.dumps(taxonomy.to_dict()),
        format=DELTA_FORMAT,
        source=str(checkpoint),
        iter=str(meta.get('iter', '')),
        weights='ema' if use_ema else 'raw',
        trainable=json.dumps(meta['peft']['trainable']))
    save_file(tensors, out, metadata=metadata)
    return metadata


def load_delta(model: nn.Module, path: str) -> List[str]:
    """Loads a delta written by :func:`export_delta` into a FineDiffusion
    whose backbone holds the base weights.

    Returns:
        list[str]: The keys loaded.

    Raises:
        ValueError: When a key is unknown or has another shape (e.g. a delta
            trained for another number of classes); the message names it.
    """
    tensors = load_file(path)
    own = model.state_dict()
    for key, value in tensors.items():
        if key not in own:
            raise ValueError(f'{path}: key {key} is not in the model')
        if own[key].shape != value.shape:
            raise ValueError(
                f'{path}: key {key} has shape {tuple(value.shape)}, the model '
                f'expects {tuple(own[key].shape)} (another taxonomy or model '
                'size?)')
    model.load_state_dict(tensors, strict=False)
    if getattr(model, 'ema', None) is not None:
        # Sampling uses the EMA: it must hold the delta's weights too.
        model.ema.copy_from(model.backbone)
    return sorted(tensors)


# Where the model keeps its sub->super table, in a FineDiffusion state dict.
TAXONOMY_KEY = 'backbone.y_embedder.sub2super'


def checkpoint_taxonomy(checkpoint: dict) -> Optional[TaxonomyLike]:
    """The taxonomy a training checkpoint was trained on: the class-name
    table of ``meta.dataset_meta`` when its run had one, otherwise the
    model's sub->super table (ids only); None when it holds neither."""
    dataset_meta = checkpoint.get('meta', {}).get('dataset_meta') or {}
    if 'taxonomy' in dataset_meta:
        return Taxonomy.from_dict(dataset_meta['taxonomy'])
    state = checkpoint.get('state_dict', checkpoint)
    # A DDP-wrapped model saves its keys under 'module.'.
    table = next((value for key, value in state.items()
                  if key.removeprefix('module.') == TAXONOMY_KEY), None)
    return None if table is None else table.tolist()


def delta_taxonomy(path: str) -> Optional[TaxonomyLike]:
    """The taxonomy saved in a delta's metadata (``taxonomy``), or its
    sub->super tensor when the metadata lacks it; None when it has neither.
    """
    with safe_open(path, framework='pt') as f:
        metadata = f.metadata() or {}
        if 'taxonomy' in metadata:
            return Taxonomy.from_dict(json.loads(metadata['taxonomy']))
        if TAXONOMY_KEY in f.keys():
            return f.get_tensor(TAXONOMY_KEY).tolist()
    return None
