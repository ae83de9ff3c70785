"""The guidance a TieredDiT samples with: fine-grained from any rank,
hierarchical over several ranks, standard or none."""
from typing import List, Optional, Sequence, Union

from torch import Tensor

from mmagic.registry import MODELS

# Each single-reference mode and the tier its reference prediction is made
# at by default (None: no reference, the plain conditional output).
REFERENCES = {'fine_grained': 'super', 'standard': 'null', 'none': None}
MODES = (*REFERENCES, 'hierarchical')

Scale = Union[float, Tensor]


@MODELS.register_module(name=['TieredGuidance', 'FineGrainedCFG'])
class TieredGuidance:
    """Which classifier-free guidance a sampler applies, and its scales.

    ``fine_grained``: eps = eps(ref) + s * (eps(sub) - eps(ref)), the
    prediction at an ancestor rank standing in for the unconditional one:
    the superclass by default (FineDiffusion, Pan et al. 2024, Eq. 6), or
    any rank the model's taxonomy has (``reference='genus'``).
    ``standard``: the same against the null row (Ho & Salimans 2022; a model
    trained with ``null_prob``). ``hierarchical``: from coarse to fine,
    eps = eps(r_0) + sum_k s_k (eps(r_k) - eps(r_{k-1})) over the
    ``references`` r_0 .. r_{K-1} and the subclass r_K, a scale per step.
    ``none``: the plain conditional output. The arithmetic is the
    backbone's (:meth:`TieredDiT.forward_with_hierarchical_cfg`); this
    object holds the choice, so that configs, metrics and tools name it.
    Registered also as ``FineGrainedCFG``, its earlier name.

    Args:
        mode (str): One of ``MODES``. Defaults to 'fine_grained'.
        scale (float): Guidance scale s; in hierarchical mode, the scale of
            every step ``scales`` does not give. Defaults to 4.0.
        guided_channels (int, optional): Guide only the first k channels
            (DiT's sampling script guides 3 of the 4 latent channels); None
            guides all.
        reference (str, optional): The reference rank of ``fine_grained``
            mode: 'super' (the default, or the superclass rank's name), a
            rank below it ('genus', 'family') or 'null'.
        references (Sequence[str]): The ranks of ``hierarchical`` mode,
            coarse to fine, e.g. ``('null', 'family', 'genus')``.
        scales (Sequence[float]): The scales s_1 .. s_K of hierarchical
            mode, one per reference. Defaults to ``scale`` for each.

    Raises:
        ValueError: For an unknown mode, a reference outside fine-grained
            mode, hierarchical mode without references, or a scale count
            other than the reference count.
    """

    def __init__(self,
                 mode: str = 'fine_grained',
                 scale: float = 4.0,
                 guided_channels: Optional[int] = None,
                 reference: Optional[str] = None,
                 references: Sequence[str] = (),
                 scales: Sequence[float] = ()) -> None:
        if mode not in MODES:
            raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
        if reference is not None and mode != 'fine_grained':
            raise ValueError(f'reference={reference!r} is for '
                             f"mode='fine_grained', not {mode!r}")
        if (references or scales) and mode != 'hierarchical':
            raise ValueError("references and scales are for "
                             f"mode='hierarchical', not {mode!r}")
        if mode == 'hierarchical':
            if not references:
                raise ValueError(
                    "mode='hierarchical' needs references, coarse to fine, "
                    "e.g. ('null', 'family', 'genus')")
            if scales and len(scales) != len(references):
                raise ValueError(f'{len(references)} references '
                                 f'{list(references)} but {len(scales)} '
                                 'scales: give one scale each')
        self.mode = mode
        self.scale = scale
        self.guided_channels = guided_channels
        self.reference = reference or REFERENCES.get(mode)
        self.references = list(references)
        self.scales = [float(s) for s in scales]

    def step_scales(self, scale: Optional[Scale] = None) -> List[Scale]:
        """The scale of each guidance step: ``scale`` for every step when
        given (a sweep), else the configured ones."""
        count = len(self.references) if self.mode == 'hierarchical' else 1
        if scale is not None:
            return [scale] * count
        return self.scales or [self.scale] * count

    def __call__(self,
                 backbone,
                 x: Tensor,
                 t: Tensor,
                 labels: Tensor,
                 scale: Optional[Scale] = None,
                 rank: str = 'sub') -> Tensor:
        """Guided output of ``backbone`` at (x, t) for subclass ``labels``.

        Args:
            backbone (TieredDiT): The model.
            x (Tensor): Noisy latents, (N, C, H, W).
            t (Tensor): Model timesteps, (N, ).
            labels (Tensor): Subclass ids, (N, ).
            scale (float or Tensor, optional): Overrides the guidance scale
                (every step's in hierarchical mode), one value or one per
                sample (N, ).
            rank (str): The tier the labels are drawn at: 'sub' (their own
                rows) or an ancestor's rank.

        Returns:
            Tensor: (N, out_channels, H, W).

        Raises:
            ValueError: From the backbone: a rank its table lacks, a
                reference not coarser than ``rank``, standard CFG without a
                null row.
        """
        if self.mode == 'none':
            return backbone(x, t, labels, backbone.tier(rank))
        return backbone.forward_with_hierarchical_cfg(
            x, t, labels, self._references(), self.step_scales(scale),
            self.guided_channels, rank)

    def check(self, backbone, rank: str = 'sub') -> None:
        """Fails as sampling ``rank`` with this guidance would, before any
        sampling starts.

        Raises:
            ValueError: As :meth:`__call__`, naming the rank or reference.
        """
        if self.mode == 'none':
            backbone.tier(rank)
        else:
            backbone.guidance_tiers(rank, self._references(),
                                    self.step_scales())

    def _references(self) -> List[str]:
        return (self.references
                if self.mode == 'hierarchical' else [self.reference])


# The earlier name, for code that imports it.
FineGrainedCFG = TieredGuidance
