"""Classifier-free guidance over the tiers of a TieredDiT."""
from typing import Optional, Union

import torch
from torch import Tensor

from mmagic.registry import MODELS

MODES = ('fine_grained', 'standard', 'none')


@MODELS.register_module()
class FineGrainedCFG:
    """Guided model output for a batch of subclass labels.

    ``fine_grained``: eps = eps(super) + s * (eps(sub) - eps(super)), the
    superclass prediction standing in for the unconditional one.
    ``standard``: the same with the null row (a model trained with
    ``null_prob``). ``none``: the plain conditional output.

    The guided and reference halves run as one batch of 2N; the learned
    variance channels pass through from the conditional half.

    Args:
        mode (str): One of ``MODES``. Defaults to 'fine_grained'.
        scale (float): Guidance scale s. Defaults to 4.0.
        guided_channels (int, optional): Guide only the first k channels and
            take the rest of the epsilon from the conditional half. DiT's
            sampling script guides 3 of the 4 latent channels; None guides all.
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

    def check(self, backbone) -> None:
        """Refuses a mode the model was not trained for."""
        if self.mode == 'standard' and not backbone.y_embedder.has_null:
            raise ValueError(
                "standard CFG needs a null row: train the TieredDiT with "
                "null_prob (e.g. 0.1), or use mode='fine_grained'")

    def __call__(self,
                 backbone,
                 x: Tensor,
                 t: Tensor,
                 labels: Tensor,
                 scale: Union[float, Tensor, None] = None) -> Tensor:
        """Guided output of ``backbone`` at (x, t) for subclass ``labels``.

        Args:
            backbone (TieredDiT): The model.
            x (Tensor): Noisy inputs, (N, C, H, W).
            t (Tensor): Model timesteps, (N, ).
            labels (Tensor): Subclass ids, (N, ).
            scale (float or Tensor, optional): Overrides the scale, one value
                or one per sample (N, ).

        Returns:
            Tensor: (N, out_channels, H, W).
        """
        embedder = backbone.y_embedder
        if self.mode == 'none':
            return backbone(x, t, embedder.rows(labels, 'sub'))
        self.check(backbone)
        tier = 'super' if self.mode == 'fine_grained' else 'null'
        rows = torch.cat([embedder.rows(labels, 'sub'),
                          embedder.rows(labels, tier)])
        out = backbone(torch.cat([x, x]), torch.cat([t, t]), rows)
        cond, ref = out.chunk(2)
        scale = self.scale if scale is None else scale
        if isinstance(scale, Tensor):
            scale = scale.to(out).reshape(-1, 1, 1, 1)
        k = self.guided_channels or x.shape[1]
        guided = ref[:, :k] + scale * (cond[:, :k] - ref[:, :k])
        return torch.cat([guided, cond[:, k:]], dim=1)
