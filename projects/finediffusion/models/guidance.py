"""The guidance a TieredDiT samples with: fine-grained, standard or none."""
from typing import Optional, Union

from torch import Tensor

from mmagic.registry import MODELS

# Each mode and the tier its reference prediction is made at (None: no
# reference, the plain conditional output).
REFERENCES = {'fine_grained': 'super', 'standard': 'null', 'none': None}
MODES = tuple(REFERENCES)


@MODELS.register_module(name=['TieredGuidance', 'FineGrainedCFG'])
class TieredGuidance:
    """Which classifier-free guidance a sampler applies, and its scale.

    ``fine_grained``: eps = eps(super) + s * (eps(sub) - eps(super)), the
    superclass prediction standing in for the unconditional one
    (FineDiffusion, Pan et al. 2024). ``standard``: the same against the
    null row (Ho & Salimans 2022; a model trained with ``null_prob``).
    ``none``: the plain conditional output. The arithmetic is the backbone's
    (:meth:`TieredDiT.forward_with_cfg`); this object holds the choice, so
    that configs, metrics and tools name it. Registered also as
    ``FineGrainedCFG``, its earlier name.

    Args:
        mode (str): One of ``MODES``. Defaults to 'fine_grained'.
        scale (float): Guidance scale s. Defaults to 4.0.
        guided_channels (int, optional): Guide only the first k channels
            (DiT's sampling script guides 3 of the 4 latent channels); None
            guides all.

    Raises:
        ValueError: For an unknown mode.
    """

    def __init__(self,
                 mode: str = 'fine_grained',
                 scale: float = 4.0,
                 guided_channels: Optional[int] = None) -> None:
        if mode not in MODES:
            raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
        self.mode = mode
        self.scale = scale
        self.guided_channels = guided_channels

    def __call__(self,
                 backbone,
                 x: Tensor,
                 t: Tensor,
                 labels: Tensor,
                 scale: Union[float, Tensor, None] = None) -> Tensor:
        """Guided output of ``backbone`` at (x, t) for subclass ``labels``.

        Args:
            backbone (TieredDiT): The model.
            x (Tensor): Noisy latents, (N, C, H, W).
            t (Tensor): Model timesteps, (N, ).
            labels (Tensor): Subclass ids, (N, ).
            scale (float or Tensor, optional): Overrides the guidance scale,
                one value or one per sample (N, ).

        Returns:
            Tensor: (N, out_channels, H, W).

        Raises:
            ValueError: From the backbone, for standard CFG with a table
                without a null row.
        """
        reference = REFERENCES[self.mode]
        if reference is None:
            return backbone(x, t, labels, 'sub')
        return backbone.forward_with_cfg(
            x, t, labels, self.scale if scale is None else scale, reference,
            self.guided_channels)


# The earlier name, for code that imports it.
FineGrainedCFG = TieredGuidance
