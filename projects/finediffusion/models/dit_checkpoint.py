"""Official DiT weights: the state dicts of the facebookresearch/DiT
release and of its (and fast-DiT's) ``train.py`` checkpoints, loaded into a
:class:`TieredDiT` by name, and a TieredDiT saved in that layout."""
import argparse
from typing import Dict, List, Tuple

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from ..weights_only import load_weights

# The ImageNet class table (1000 classes + null): FineDiffusion learns a new
# tiered table instead.
IMAGENET_TABLE = 'y_embedder.embedding_table.weight'

# The taxonomy buffer of a TieredDiT, which the official layout lacks.
TIERED_BUFFER = 'y_embedder.sub2super'

# What a training checkpoint of DiT's or fast-DiT's train.py holds besides
# the optimizer ('opt') and the command line ('args'): the raw and the EMA
# weights, each a plain DiT state dict.
DIT_TRAINING_WEIGHTS = ('ema', 'model')


def read_dit_state_dict(path: str, weights: str = 'ema') -> Dict[str, Tensor]:
    """The DiT state dict in ``path``: a released one, or one of the two in
    a training checkpoint of DiT's or fast-DiT's ``train.py``
    (``{'model', 'ema', 'opt', 'args'}``).

    The file is read with ``weights_only=True``. A training checkpoint's
    ``args`` is an ``argparse.Namespace``, allowed for this read only:
    weights-only unpickling builds it empty and sets its attributes, which
    are themselves held to the weights-only types, so it runs no code, and
    any other object in the file is still refused.

    Args:
        path (str): The file.
        weights (str): Which weights of a training checkpoint: 'ema' (what
            DiT's ``sample.py`` samples with) or 'model' (the raw trained
            weights). A released state dict has only one set. Defaults to
            'ema'.

    Returns:
        dict: Parameter names to tensors.

    Raises:
        ValueError: When ``weights`` is neither, or the file (or its
            chosen entry) is not a mapping of names to tensors; the message
            names the file.
        pickle.UnpicklingError: When the file holds an object other than
            tensors, containers, ``argparse.Namespace`` and MMEngine's own
            types; the message names the file.
    """
    if weights not in DIT_TRAINING_WEIGHTS:
        raise ValueError(f'weights must be one of {DIT_TRAINING_WEIGHTS}, '
                         f'got {weights!r}')
    with torch.serialization.safe_globals([argparse.Namespace]):
        state = load_weights(path, map_location='cpu')
    if isinstance(state, dict) and all(
            isinstance(state.get(key), dict) for key in DIT_TRAINING_WEIGHTS):
        state = state[weights]
    if not isinstance(state, dict) or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f'{path} is not a plain DiT state dict (expected a mapping of '
            'parameter names to tensors, or a training checkpoint of DiT\'s '
            "train.py with 'model' and 'ema' state dicts)")
    return state


def load_official_dit(model: nn.Module, path: str,
                      weights: str = 'ema') -> dict:
    """Copies an official DiT state dict into ``model`` by name.

    The file is a released state dict or a training checkpoint of DiT's
    ``train.py`` (:func:`read_dit_state_dict`), read with
    ``weights_only=True``: a downloaded checkpoint is never unpickled. The
    ImageNet class table is skipped, LayerNorm scales and offsets and
    DiffFit block scales, absent from the release, keep their identity
    initialization, and every other tensor must be present with the right
    shape.

    Args:
        model (nn.Module): A :class:`TieredDiT`.
        path (str): Path to e.g. ``DiT-XL-2-256x256.pt``.
        weights (str): 'ema' or 'model': which weights of a training
            checkpoint. Defaults to 'ema'.

    Returns:
        dict: ``skipped`` (checkpoint keys not loaded), ``kept_init``
        (model keys not in the checkpoint, left at their initialization)
        and ``class_table`` (the skipped class table, or None).

    Raises:
        ValueError: When the file is not a DiT state dict, or a tensor is
            missing or has another shape; the message names the key.
    """
    state = read_dit_state_dict(path, weights)
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
    to_load, kept_init = _matched(state, own, path)
    model.load_state_dict(to_load, strict=False)
    print_log(
        f'Loaded {len(to_load)} tensors from {path}; skipped {skipped}; '
        f'kept {len(kept_init)} at init: {kept_init}', logger='current')
    return dict(
        skipped=skipped,
        kept_init=kept_init,
        class_table=state.get(IMAGENET_TABLE))


def _matched(state: Dict[str, Tensor], own: Dict[str, Tensor],
             path: str) -> Tuple[Dict[str, Tensor], List[str]]:
    """The checkpoint's tensors for the model's keys, and the model keys
    left at their initialization (the class table, the taxonomy and the
    tensors DiT lacks).

    Raises:
        ValueError: For a missing key of DiT's or a tensor of another
            shape, naming the file and the key.
    """
    to_load, kept_init = {}, []
    for key, value in own.items():
        if key in (IMAGENET_TABLE, TIERED_BUFFER):
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
    return to_load, kept_init


def _is_new_in_tiered_dit(key: str) -> bool:
    """Whether ``key`` is a parameter DiT lacks: an affine LayerNorm's scale
    or offset, or a DiffFit block scale (all identity at init)."""
    parts = key.split('.')
    return (len(parts) > 1 and parts[-2] in ('norm1', 'norm2', 'norm_final')
            or parts[-1] in ('scale_attn', 'scale_mlp'))


def save_official_dit(model: nn.Module, path: str,
                      use_ema: bool = True) -> int:
    """Writes a FineDiffusion's backbone as an official-layout DiT state
    dict, which ``TieredDiT(pretrained=...)`` loads like the released
    checkpoints (its class table is skipped there, its taxonomy buffer is
    not written).

    Args:
        model (nn.Module): A FineDiffusion (its ``backbone`` and ``ema``).
        path (str): Output ``.pth``.
        use_ema (bool): Write the EMA weights where the model keeps them.
            Defaults to True.

    Returns:
        int: Number of tensors written.
    """
    backbone = model.backbone
    if use_ema and model.ema is not None:
        with model.ema.swapped_in(backbone):
            state = {k: v.clone() for k, v in backbone.state_dict().items()}
    else:
        state = backbone.state_dict()
    state.pop(TIERED_BUFFER)
    torch.save(state, path)
    return len(state)
