"""The PEFT checkpoint and delta format: which tensors a FineDiffusion
training checkpoint holds (``meta.peft``), the safetensors delta exported
from it, and loading either into a model that holds the base weights."""
import json
import os.path as osp
from typing import Dict, Iterable, List, Optional, Sequence

from mmengine.logging import print_log
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .models.ema import ema_key
from .models.peft import NEVER_TRAINABLE
from .models.tiered_dit import CLASS_PARAMS, CLASS_TABLE, TAXONOMY_BUFFER
from .taxonomy import Taxonomy, TaxonomyLike, taxonomy_of
from .weights_only import load_weights

DELTA_FORMAT = 'finediffusion-delta/1'

# The taxonomy: the superclass id of each subclass, a buffer of the table.
TAXONOMY_KEY = f'backbone.{TAXONOMY_BUFFER}'

# The tiered class table in a FineDiffusion state dict. Never the base's
# (whose rows are ImageNet's classes): trained weights must always hold it.
CLASS_TABLE_KEY = f'backbone.{CLASS_TABLE}'

# Where earlier versions saved the averaged module's whole state dict.
_STALE_EMA = 'ema._paired.'


def checkpoint_keys(trainable: Sequence[str], ema: bool) -> List[str]:
    """The state-dict keys of a PEFT training checkpoint, exactly.

    Each trainable backbone tensor, its EMA when the run keeps one, and the
    taxonomy. Everything else (the frozen DiT weights, the VAE) is the base
    model's and comes back from it on loading.

    Args:
        trainable (list[str]): Trainable parameter names, relative to the
            backbone (``FineDiffusion.trainable``).
        ema (bool): Whether the run keeps an EMA of them.

    Returns:
        list[str]: Keys of the model's state dict.
    """
    keys = [f'backbone.{name}' for name in trainable]
    if ema:
        keys += [f'ema.{ema_key(name)}' for name in trainable]
    return keys + [TAXONOMY_KEY]


def delta_keys(trainable: Sequence[str]) -> List[str]:
    """The keys of a delta written by :func:`export_delta`, exactly: each
    trainable backbone tensor (EMA or raw weights) and the taxonomy."""
    return [f'backbone.{name}' for name in trainable] + [TAXONOMY_KEY]


def _declares_ema(peft: dict, state: Dict[str, Tensor]) -> bool:
    """Whether a checkpoint's ``meta.peft`` says its run kept an EMA; files
    of earlier versions do not say, and hold ``ema.*`` keys if it did."""
    if 'ema' in peft:
        return bool(peft['ema'])
    return any(k.startswith('ema.') and not k.startswith(_STALE_EMA)
               for k in state)


def _listed(items: Sequence[str], shown: int = 10) -> str:
    """The first ``shown`` items, comma-separated, and how many more."""
    more = len(items) - shown
    return ', '.join(items[:shown]) + (f' and {more} more' if more > 0 else '')


def require_keys(held: Iterable[str], keys: Sequence[str], what: str) -> None:
    """Raises ValueError naming the ``keys`` that ``held`` lacks.

    Args:
        held (iterable of str): The keys a file holds.
        keys (list[str]): The keys it must hold.
        what (str): The start of the message, naming the file.
    """
    held = set(held)
    missing = [k for k in keys if k not in held]
    if missing:
        raise ValueError(f'{what}: {len(missing)} of {len(keys)} missing: '
                         f'{_listed(missing)}')


def require_shapes(state: Dict[str, Tensor], own: Dict[str, Tensor],
                   source: str) -> None:
    """Raises ValueError naming every tensor of ``state`` whose shape is not
    that of the same key in ``own``.

    MMEngine loads with ``strict=False``, which only logs a size mismatch
    and leaves the model's tensor as it was: a run would continue from an
    initial value (and its EMA from the checkpoint's) without failing.

    Args:
        state (dict): The checkpoint's state dict.
        own (dict): The model's state dict.
        source (str): The checkpoint's name, for messages.

    Raises:
        ValueError: Naming the file and each key with both shapes.
    """
    wrong = [f'{key} (checkpoint {list(value.shape)}, model '
             f'{list(own[key].shape)})'
             for key, value in state.items()
             if key in own and hasattr(value, 'shape')
             and value.shape != own[key].shape]
    if wrong:
        raise ValueError(
            f'{source}: {len(wrong)} tensors have another shape than the '
            f"model's (was it trained with another architecture?): "
            f'{_listed(wrong)}')


def require_backbone(model: nn.Module, held: Iterable[str],
                     source: str) -> None:
    """Checks that trained weights and the model's base together give every
    backbone tensor, so that none is left at its random initialization.

    The class table must always be held: it is new, never the base DiT's.
    Every other backbone tensor the weights lack (the frozen ones of a PEFT
    run) comes from the base, which the model holds only when it was built
    with ``backbone.pretrained``; the fixed sin-cos position embedding
    (:data:`NEVER_TRAINABLE`) needs neither.

    Args:
        model (nn.Module): The FineDiffusion that the weights go into.
        held (iterable of str): The keys of the weights' state dict
            (``backbone.*`` among them).
        source (str): The weights' file, for messages.

    Raises:
        ValueError: When the class table is missing, or the model has no
            base and a backbone tensor is missing; the message names the
            file and the keys.
    """
    held = set(held)
    if CLASS_TABLE_KEY not in held:
        raise ValueError(
            f'{source} lacks the class table {CLASS_TABLE_KEY}, which never '
            'comes from the base DiT (its rows are ImageNet classes): were '
            f"the weights trained with '{CLASS_PARAMS}' frozen?")
    if getattr(model.backbone, 'pretrained', None):
        return
    needed = [f'backbone.{name}'
              for name, _ in model.backbone.named_parameters()
              if name not in NEVER_TRAINABLE]
    missing = [key for key in needed if key not in held]
    if missing:
        raise ValueError(
            f"{source} holds {len(needed) - len(missing)} of the backbone's "
            f'{len(needed)} tensors; the other {len(missing)} (frozen, e.g. '
            f'{missing[0]}) come from the base DiT, which the model lacks: '
            'set model.backbone.pretrained (or pass --base to '
            'tools/sample.py, tools/merge_delta.py)')


def check_output(out: str, inputs: Iterable[Optional[str]]) -> None:
    """Refuses an output path that is one of the inputs, before anything is
    written (writing it would replace the input).

    Args:
        out (str): The output file.
        inputs (iterable of str or None): The input files; None is skipped.

    Raises:
        ValueError: Naming the path, when ``out`` is (resolves to, or is a
            link to) one of the inputs.
    """
    for path in inputs:
        if path is None:
            continue
        same = (osp.samefile(out, path) if osp.exists(out)
                and osp.exists(path) else
                osp.realpath(out) == osp.realpath(path))
        if same:
            raise ValueError(f'the output {out} is the input {path}: '
                             'choose another output path')


def peft_state_dict(model: nn.Module,
                    checkpoint: dict,
                    source: str,
                    require_trained: bool = False) -> Dict[str, Tensor]:
    """The whole state dict of ``model`` from a PEFT training checkpoint.

    The checkpoint must hold every tensor its ``meta.peft`` declares; the
    others are taken from the model, which holds the base weights. A
    checkpoint of a run without EMA given to a model with one starts the
    average at the checkpoint's weights; the EMA of a checkpoint given to a
    model without one is left out.

    Args:
        model (nn.Module): A FineDiffusion holding the base weights.
        checkpoint (dict): The loaded checkpoint (``state_dict`` and
            ``meta.peft``).
        source (str): The checkpoint's name, for messages.
        require_trained (bool): Also require every tensor that ``model``
            trains (a resumed run would otherwise continue such a tensor
            from its initial value). Defaults to False.

    Returns:
        dict: A state dict with every key of ``model``'s.

    Raises:
        ValueError: When a declared (or required trained) tensor is
            missing, or one that neither the checkpoint nor the model's base
            gives (:func:`require_backbone`); the message names the keys.
    """
    peft = checkpoint['meta']['peft']
    state = _without_stale_ema(checkpoint['state_dict'], source)
    has_ema = _declares_ema(peft, state)
    require_keys(state, checkpoint_keys(peft['trainable'], has_ema),
                 f'{source} lacks tensors that its meta.peft declares '
                 f"(trainable{', EMA' if has_ema else ''}, taxonomy)")
    if require_trained:
        require_keys(state, [f'backbone.{name}' for name in model.trainable],
                     f'{source} lacks tensors that the model trains (was it '
                     'trained with another `trainable` set?)')
    require_backbone(model, state, source)
    own = model.state_dict()
    if model.ema is not None and not has_ema:
        print_log(f'{source} holds no EMA (its run had model.ema_decay='
                  'None): the EMA starts at its trained weights',
                  logger='current')
        for name in peft['trainable']:
            if f'ema.{ema_key(name)}' in own:
                state[f'ema.{ema_key(name)}'] = state[f'backbone.{name}']
    elif model.ema is None and has_ema:
        print_log(f'{source}: the model keeps no EMA; the checkpoint\'s EMA '
                  'is not loaded', logger='current')
        state = {k: v for k, v in state.items() if not k.startswith('ema.')}
    for key, value in own.items():
        state.setdefault(key, value)
    return state


def _without_stale_ema(state: Dict[str, Tensor],
                       source: str) -> Dict[str, Tensor]:
    """A copy of ``state`` without the frozen weights that earlier versions
    saved a second time under ``ema._paired.``."""
    stale = [k for k in state if k.startswith(_STALE_EMA)]
    if stale:
        print_log(f'{source}: ignoring {len(stale)} {_STALE_EMA}* entries '
                  '(frozen weights that earlier versions saved twice)',
                  logger='current')
    return {k: v for k, v in state.items() if not k.startswith(_STALE_EMA)}


def is_peft_checkpoint(checkpoint: dict) -> bool:
    """Whether a loaded checkpoint was written by a PEFT run (it declares
    its tensors in ``meta.peft``)."""
    return 'peft' in (checkpoint.get('meta') or {})


def trim_checkpoint(model: nn.Module, checkpoint: dict) -> None:
    """Keeps in a checkpoint being saved exactly the trainable tensors,
    their EMA and the taxonomy (:func:`checkpoint_keys`), and declares them
    in ``meta.peft``.

    Args:
        model (nn.Module): The FineDiffusion being trained.
        checkpoint (dict): MMEngine's checkpoint, changed in place.
    """
    ema = model.ema is not None
    state = checkpoint['state_dict']
    checkpoint['state_dict'] = {
        k: state[k]
        for k in checkpoint_keys(model.trainable, ema)
    }
    checkpoint['meta']['peft'] = dict(trainable=model.trainable, ema=ema)


def export_delta(checkpoint: str, out: str, use_ema: bool = True) -> dict:
    """Writes the backbone's trained tensors of a training checkpoint as a
    safetensors delta that applies to the official base weights.

    Args:
        checkpoint (str): A checkpoint written by a FineDiffusion training
            run (with :class:`PEFTFreezeHook`).
        out (str): Output ``.safetensors`` path.
        use_ema (bool): Export the EMA weights (what DiT samples with); a
            run without EMA (``model.ema_decay=None``) has only its raw
            weights, which are exported instead. Defaults to True.

    Returns:
        dict: The metadata written with the tensors: ``weights`` ('ema' or
        'raw'), ``trainable`` (JSON list of names), the class-name table
        (``taxonomy``) among them.

    Raises:
        ValueError: When ``out`` is ``checkpoint``, the checkpoint was
            not written with :class:`PEFTFreezeHook`, or lacks a tensor its
            ``meta.peft`` declares (the message names them).
    """
    check_output(out, [checkpoint])
    ckpt = load_weights(checkpoint, map_location='cpu')
    meta = ckpt.get('meta', {})
    if not is_peft_checkpoint(ckpt):
        raise ValueError(f'{checkpoint} was not written by a FineDiffusion '
                         'run with PEFTFreezeHook (no meta.peft)')
    state = ckpt['state_dict']
    trainable = meta['peft']['trainable']
    has_ema = _declares_ema(meta['peft'], state)
    require_keys(state, checkpoint_keys(trainable, has_ema),
                 f'{checkpoint} lacks tensors that its meta.peft declares '
                 f"(trainable{', EMA' if has_ema else ''}, taxonomy)")
    use_ema = use_ema and has_ema
    tensors = {
        f'backbone.{name}':
        state[f'ema.{ema_key(name)}' if use_ema else f'backbone.{name}']
        .contiguous()
        for name in trainable
    }
    sub2super = state[TAXONOMY_KEY]
    tensors[TAXONOMY_KEY] = sub2super
    taxonomy = taxonomy_of(meta.get('dataset_meta'), sub2super.tolist())
    metadata = dict(
        taxonomy=json.dumps(taxonomy.to_dict()),
        format=DELTA_FORMAT,
        source=str(checkpoint),
        iter=str(meta.get('iter', '')),
        weights='ema' if use_ema else 'raw',
        trainable=json.dumps(trainable))
    save_file(tensors, out, metadata=metadata)
    return metadata


def load_delta(model: nn.Module, path: str) -> List[str]:
    """Loads a delta written by :func:`export_delta` into a FineDiffusion
    whose backbone holds the base weights.

    Returns:
        list[str]: The keys loaded.

    Raises:
        ValueError: When the delta lacks a tensor that its metadata
            (``trainable``) declares, or one that neither it nor the model's
            base gives (:func:`require_backbone`), or a key is unknown or has
            another shape (e.g. a delta trained for another number of
            classes); the message names the keys.
    """
    tensors = load_file(path)
    with safe_open(path, framework='pt') as f:
        metadata = f.metadata() or {}
    if 'trainable' in metadata:
        require_keys(tensors, delta_keys(json.loads(metadata['trainable'])),
                     f'{path} lacks tensors that its metadata declares '
                     '(trainable, taxonomy)')
    require_backbone(model, tensors, path)
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
