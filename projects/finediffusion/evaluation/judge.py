"""A trained classifier that scores generated images: class accuracy and
intra-class diversity in its feature space."""
import os.path as osp
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ..taxonomy import Taxonomy


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
                 device: Union[str, torch.device] = 'cpu',
                 batch_size: int = 500) -> None:
        from mmpretrain.apis import init_model
        self.model = init_model(config, checkpoint, device=device).eval()
        self.batch_size = batch_size

    def to(self, device: Union[str, torch.device]) -> 'Judge':
        """Moves the classifier to ``device``; returns itself."""
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


def accuracy(pred: Tensor, labels: Tensor, sub2super: Sequence[int],
             rank_tables: Optional[Dict[str, Sequence[int]]] = None
             ) -> Dict[str, float]:
    """Subclass, superclass and other ranks' top-1 of predicted subclass
    ids (a prediction counts at a rank when its ancestor there is right).

    A prediction outside the taxonomy (a classifier with more classes) is
    wrong at every level.

    Args:
        pred (Tensor): Predicted subclass ids, (N, ).
        labels (Tensor): True subclass ids, (N, ).
        sub2super (Sequence[int]): Superclass id of each subclass.
        rank_tables (dict, optional): Rank name to the ancestor id of each
            subclass, for the ranks below the superclass.

    Returns:
        dict: ``subclass_top1``, ``superclass_top1`` and ``<rank>_top1`` of
        each of ``rank_tables``, fractions in [0, 1].
    """
    tables = dict(superclass=sub2super, **(rank_tables or {}))
    result = dict(subclass_top1=(pred == labels).float().mean().item())
    for rank, table in tables.items():
        table = torch.as_tensor(list(table))
        in_range = pred < len(table)
        hit = in_range & (table[pred.clamp(max=len(table) - 1)] ==
                          table[labels])
        result[f'{rank}_top1'] = hit.float().mean().item()
    return result


def intra_class_spread(features: Tensor, labels: Tensor,
                       min_count: int = 2) -> Optional[float]:
    """Mean pairwise distance between features of the same class.

    Averaged over classes with at least ``min_count`` images; compare a
    model's value with the real images' (1.0 = as varied as the data,
    near 0 = one image per class).

    Args:
        features (Tensor): (N, D) features.
        labels (Tensor): (N, ) class ids.
        min_count (int): Fewest images of a class that count. Defaults
            to 2.

    Returns:
        float or None: The mean distance, in feature units; None when no
        class has ``min_count`` images.
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


def read_real_images(root: str, ranks: Sequence[str] = ()
                     ) -> Tuple[Tensor, Tensor, Taxonomy]:
    """The images of a ``HierarchyDataset`` folder, to judge as real ones.

    Args:
        root (str): ``root/<superclass>/<subclass>/<image>`` (with
            ``ranks``, one folder level per rank); the images must share one
            size.
        ranks (Sequence[str]): The folder's ranks (:class:`HierarchyDataset`).

    Returns:
        tuple: The images, (N, 3, H, W) uint8 RGB; their subclass ids, (N, );
        and the folder's :class:`Taxonomy`.

    Raises:
        ValueError: From :func:`read_hierarchy`, for a folder without
            images or with an inconsistent taxonomy.
    """
    from PIL import Image

    # Imported here: the metrics do not load the dataset code until used.
    from ..datasets.hierarchy import read_hierarchy
    taxonomy, samples = read_hierarchy(root, ranks=ranks)
    images = np.stack(
        [np.array(Image.open(osp.join(root, path))) for path, _ in samples])
    labels = torch.tensor([label for _, label in samples])
    return torch.from_numpy(images).permute(0, 3, 1, 2), labels, taxonomy


def judged(judge: Judge,
           images: Tensor,
           labels: Tensor,
           sub2super: Sequence[int],
           real_spread: float,
           with_hits: bool = False,
           rank_tables: Optional[Dict[str, Sequence[int]]] = None) -> dict:
    """The judge's verdict on generated images of ``labels``.

    Args:
        judge (Judge): The classifier.
        images (Tensor): (N, 3, H, W) uint8 RGB.
        labels (Tensor): The subclass ids they were generated for, (N, ).
        sub2super (Sequence[int]): Superclass id of each subclass.
        real_spread (float): The real images' intra-class spread
            (:class:`SampleJudge`).
        with_hits (bool): Also return ``hits``, the per-sample subclass
            hits, (N, ) bool numpy array (not JSON). Defaults to False.
        rank_tables (dict, optional): Ranks below the superclass, as in
            :func:`accuracy`.

    Returns:
        dict: ``subclass_top1``, ``superclass_top1`` (and ``<rank>_top1``
        of each of ``rank_tables``), ``within_superclass``
        (subclass top-1 among the samples of the right superclass; 0 when
        there are none), all fractions in [0, 1], and ``diversity``, the
        intra-class spread relative to the real images' (1 = as varied).
    """
    verdict = judge(images)
    spread = intra_class_spread(verdict['features'], labels)
    acc = accuracy(verdict['pred'], labels, sub2super, rank_tables)
    if with_hits:
        acc['hits'] = (verdict['pred'] == labels).numpy()
    # Of the samples of the right superclass, the share of the right
    # subclass: the fine detail alone, which fine-grained CFG amplifies.
    within = (acc['subclass_top1'] / acc['superclass_top1']
              if acc['superclass_top1'] else 0.)
    return dict(**acc, within_superclass=within,
                diversity=spread / real_spread)


class SampleJudge:
    """A :class:`Judge` with held-out real images, which scores generated
    images against them (:func:`judged`).

    Args:
        judge (Judge): The classifier.
        real_root (str): The real images' folder (:func:`read_real_images`).
        ranks (Sequence[str]): Its ranks below the subclass, finest first;
            with more than one, verdicts also give each rank's top-1.

    Attributes:
        images (Tensor): The real images, (N, 3, H, W) uint8 RGB.
        labels (Tensor): Their subclass ids, (N, ).
        taxonomy (Taxonomy): The folder's taxonomy.
        accuracy (dict): The judge's :func:`accuracy` on them.
        spread (float): Their :func:`intra_class_spread`, the reference of
            the samples' diversity.
    """

    def __init__(self, judge: Judge, real_root: str,
                 ranks: Sequence[str] = ()) -> None:
        self.judge = judge
        self.images, self.labels, self.taxonomy = read_real_images(
            real_root, ranks)
        self.rank_tables = {rank: self.taxonomy.table(k)
                            for k, rank in enumerate(self.taxonomy.ranks[:-1])}
        verdict = judge(self.images)
        self.spread = intra_class_spread(verdict['features'], self.labels)
        self.accuracy = accuracy(verdict['pred'], self.labels,
                                 self.taxonomy.sub2super, self.rank_tables)

    def __call__(self, images: Tensor, labels: Tensor,
                 with_hits: bool = False) -> dict:
        """:func:`judged` of generated ``images`` of ``labels``, (N, 3, H,
        W) uint8 RGB and (N, ), against the real images."""
        return judged(self.judge, images, labels, self.taxonomy.sub2super,
                      self.spread, with_hits, self.rank_tables)
