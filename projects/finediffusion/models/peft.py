"""Which backbone parameters train: FineDiffusion's PEFT set and baselines."""
from fnmatch import fnmatchcase
from typing import List, Sequence, Tuple, Union

import torch
from torch import nn

from .tiered_dit import CLASS_PARAMS, CLASS_TABLE

# Parameter-name patterns (fnmatch) of the trainable sets compared in the
# paper. Names are relative to the TieredDiT backbone.
PRESETS = {
    # Tiered class table, every bias, LayerNorm scales (their offsets are
    # biases): FineDiffusion's PEFT.
    'finediffusion': (CLASS_PARAMS, '*.bias', '*norm*.weight'),
    # Biases only (Ben Zaken et al., 2022).
    'bitfit': ('*.bias', ),
    # DiffFit (Xie et al., 2023): biases, norms, class table and the learnable
    # per-block scales (TieredDiT(block_scales=True)).
    'difffit': (CLASS_PARAMS, '*.bias', '*norm*.weight', '*.scale_attn',
                '*.scale_mlp'),
    'full': ('*', ),
}

# The fixed sin-cos position embedding never trains.
NEVER_TRAINABLE = ('pos_embed', )


def resolve_patterns(trainable: Union[str, Sequence[str]]) -> List[str]:
    """A preset name or a list of fnmatch patterns, as a list of patterns."""
    if isinstance(trainable, str):
        if trainable not in PRESETS:
            raise ValueError(f'unknown trainable preset {trainable!r}; use '
                             f'one of {sorted(PRESETS)} or a list of '
                             'parameter-name patterns')
        return list(PRESETS[trainable])
    return list(trainable)


def apply_trainable(module: nn.Module,
                    trainable: Union[str, Sequence[str]]) -> List[str]:
    """Freezes every parameter of ``module`` but those matching ``trainable``.

    Args:
        module (nn.Module): Usually the TieredDiT backbone.
        trainable (str or list[str]): A key of :data:`PRESETS` or fnmatch
            patterns over parameter names.

    Returns:
        list[str]: Names of the trainable parameters.

    Raises:
        ValueError: When a pattern matches no parameter (a typo would
            otherwise silently freeze what was meant to train).
    """
    patterns = resolve_patterns(trainable)
    names = [name for name, _ in module.named_parameters()]
    unmatched = [p for p in patterns if not any(fnmatchcase(n, p) for n in names)]
    if unmatched:
        raise ValueError(f'trainable patterns {unmatched} match no parameter '
                         f'(names look like {names[:3]})')
    chosen = []
    for name, param in module.named_parameters():
        train = name not in NEVER_TRAINABLE and any(
            fnmatchcase(name, p) for p in patterns)
        param.requires_grad_(train)
        if train:
            chosen.append(name)
    return chosen


def trainable_count(module: nn.Module) -> Tuple[int, int]:
    """(trainable, total) parameter counts of ``module``."""
    params = list(module.parameters())
    return (sum(p.numel() for p in params if p.requires_grad),
            sum(p.numel() for p in params))


def train_rows_only(backbone: nn.Module, trainable: Sequence[str],
                    rows: Sequence[int]) -> None:
    """Lets only ``rows`` of the class table change in training.

    Zeroes, in backward, the gradient of every other row and of every other
    trainable tensor, which stay trainable so that checkpoints and deltas
    still hold them: under an optimizer without weight decay (AdamW's
    moments stay zero) they keep their values exactly, and so does their
    EMA. ``tools/add_species.py`` trains new species this way.

    Args:
        backbone (nn.Module): The TieredDiT, its trainable set applied.
        trainable (Sequence[str]): Its trainable parameter names.
        rows (Sequence[int]): Rows of the class table
            (:data:`tiered_dit.CLASS_TABLE`), each in range.

    Raises:
        ValueError: For no rows, or a row outside the table, naming it.
    """
    params = dict(backbone.named_parameters())
    table = params[CLASS_TABLE]
    outside = sorted(r for r in set(rows) if not 0 <= r < len(table))
    if not rows or outside:
        raise ValueError(f'train_only_rows must be rows of the class table '
                         f'(0 to {len(table) - 1}), got {outside or "none"}')
    mask = torch.zeros(len(table), 1, device=table.device)
    mask[list(rows)] = 1
    table.register_hook(lambda grad: grad * mask.to(grad))
    for name in trainable:
        if name != CLASS_TABLE:
            params[name].register_hook(torch.zeros_like)
