"""A trained classifier that scores generated images: class accuracy and
intra-class diversity in its feature space."""
from typing import Dict, Optional, Sequence

import torch
from torch import Tensor


class Judge:
    """An mmpretrain classifier over the subclasses of a taxonomy.

    Args:
        config (str): The classifier's mmpretrain config.
        checkpoint (str): Its weights (read with ``weights_only``).
        device (str or torch.device): Defaults to 'cpu'.
        batch_size (int): Images per forward pass. Defaults to 500.
    """

    def __init__(self,
                 config: str,
                 checkpoint: str,
                 device='cpu',
                 batch_size: int = 500) -> None:
        from mmpretrain.apis import init_model
        self.model = init_model(config, checkpoint, device=device).eval()
        self.batch_size = batch_size

    def to(self, device) -> 'Judge':
        self.model.to(device)
        return self

    @torch.no_grad()
    def __call__(self, images: Tensor,
                 channel_order: str = 'rgb') -> Dict[str, Tensor]:
        """Predicted subclasses and pooled features of uint8 images.

        Args:
            images (Tensor): (N, 3, H, W) uint8.
            channel_order (str): 'rgb', or 'bgr' (MMagic's generated
                images). Defaults to 'rgb'.

        Returns:
            dict: ``pred`` (N, ) and ``features`` (N, D), on the CPU.
        """
        preds, feats = [], []
        for batch in images.split(self.batch_size):
            # mmpretrain models take BGR, as OpenCV reads files.
            if channel_order == 'rgb':
                batch = batch.flip(1)
            data = self.model.data_preprocessor(dict(inputs=list(batch)),
                                                False)
            feat = self.model.extract_feat(data['inputs'])
            logits = self.model.head(feat)
            feat = feat[-1] if isinstance(feat, tuple) else feat
            preds.append(logits.argmax(dim=1).cpu())
            feats.append(feat.flatten(1).float().cpu())
        return dict(pred=torch.cat(preds), features=torch.cat(feats))


def accuracy(pred: Tensor, labels: Tensor,
             sub2super: Sequence[int]) -> Dict[str, float]:
    """Subclass and superclass top-1 of predicted subclass ids.

    A prediction outside the taxonomy (a classifier with more classes) is
    wrong at both levels.
    """
    table = torch.as_tensor(list(sub2super))
    in_range = pred < len(table)
    super_hit = in_range & (table[pred.clamp(max=len(table) - 1)] ==
                            table[labels])
    return dict(
        subclass_top1=(pred == labels).float().mean().item(),
        superclass_top1=super_hit.float().mean().item())


def intra_class_spread(features: Tensor, labels: Tensor,
                       min_count: int = 2) -> Optional[float]:
    """Mean pairwise distance between features of the same class.

    Averaged over classes with at least ``min_count`` images; compare a
    model's value with the real images' (1.0 = as varied as the data,
    near 0 = one image per class).
    """
    spreads = []
    for label in labels.unique():
        group = features[labels == label]
        if len(group) < min_count:
            continue
        dist = torch.cdist(group, group)
        n = len(group)
        spreads.append(dist.sum() / (n * (n - 1)))
    return torch.stack(spreads).mean().item() if spreads else None
