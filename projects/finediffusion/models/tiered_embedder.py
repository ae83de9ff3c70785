"""Class embedding table with one row per subclass and one per superclass."""
from typing import Optional, Sequence

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmagic.registry import MODELS

TIERS = ('sub', 'super', 'null')


@MODELS.register_module()
class TieredEmbedder(BaseModule):
    """Embeds subclass labels with a table that also holds superclass rows.

    Rows ``[0, num_classes)`` are subclasses, rows
    ``[num_classes, num_classes + num_superclasses)`` are superclasses and,
    when ``null_prob`` is given, one last row is the unconditional (null)
    class of standard classifier-free guidance.

    In training a subclass label is replaced by its superclass with
    probability ``super_prob`` (FineDiffusion) and by the null row with
    probability ``null_prob`` (standard CFG); the two draws are exclusive.

    Args:
        num_classes (int): Number of subclasses.
        sub2super (Sequence[int]): Superclass id of every subclass, indexed
            by subclass id.
        embed_dim (int): Width of an embedding row.
        num_superclasses (int, optional): Number of superclasses. Defaults to
            one more than the largest id in ``sub2super``.
        super_prob (float): Probability of replacing a label by its
            superclass in training. Defaults to 0.1.
        null_prob (float, optional): Probability of replacing a label by the
            null row in training. ``None`` builds no null row. Defaults to
            None.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    def __init__(self,
                 num_classes: int,
                 sub2super: Sequence[int],
                 embed_dim: int,
                 num_superclasses: Optional[int] = None,
                 super_prob: float = 0.1,
                 null_prob: Optional[float] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        # On the CPU even when the model is built on the meta device: the
        # taxonomy is checked now.
        sub2super = torch.as_tensor(
            list(sub2super), dtype=torch.long, device='cpu')
        if num_superclasses is None:
            num_superclasses = int(sub2super.max()) + 1 if len(sub2super) else 0
        _check_taxonomy(num_classes, num_superclasses, sub2super)
        if not 0 <= super_prob + (null_prob or 0.) <= 1:
            raise ValueError('super_prob + null_prob must lie in [0, 1], got '
                             f'{super_prob} + {null_prob}')
        self.num_classes = num_classes
        self.num_superclasses = num_superclasses
        self.super_prob = super_prob
        self.null_prob = null_prob
        self.has_null = null_prob is not None
        num_rows = num_classes + self.num_superclasses + int(self.has_null)
        self.embedding_table = nn.Embedding(num_rows, embed_dim)
        # A buffer, so that the taxonomy travels with every checkpoint.
        self.register_buffer('sub2super', sub2super)

    def rows(self, labels: Tensor, tier: str = 'sub') -> Tensor:
        """Table rows of subclass ``labels`` at the given tier.

        Labels outside ``[0, num_classes)`` get row ids past the table, so
        that the lookup fails instead of reading another row (label
        ``num_classes`` would otherwise be superclass 0's row). This costs no
        device synchronisation; entry points check their labels once with
        :meth:`check_labels`, for a message naming them.

        Args:
            labels (Tensor): Subclass ids, shape (N, ).
            tier (str): 'sub', 'super' or 'null'.

        Returns:
            Tensor: Row ids, shape (N, ).
        """
        if tier not in TIERS:
            raise ValueError(f'tier must be one of {TIERS}, got {tier!r}')
        valid = (labels >= 0) & (labels < self.num_classes)
        beyond = torch.full_like(labels, self.embedding_table.num_embeddings)
        if tier == 'sub':
            return torch.where(valid, labels, beyond)
        if tier == 'super':
            rows = self.num_classes + self.sub2super[labels.clamp(
                0, self.num_classes - 1)]
            return torch.where(valid, rows, beyond)
        if tier == 'null':
            if not self.has_null:
                raise ValueError('this TieredEmbedder has no null row: build '
                                 'it with null_prob to use the null tier')
            return torch.full_like(labels, self.embedding_table.num_embeddings - 1)

    def check_labels(self, labels: Tensor) -> None:
        """Refuses subclass labels outside ``[0, num_classes)``.

        One device synchronisation; for entry points, once per call.

        Args:
            labels (Tensor): Subclass ids, any shape.

        Raises:
            ValueError: Naming the out-of-range labels and the class count.
        """
        labels = labels.flatten()
        if labels.is_floating_point():
            raise ValueError('subclass labels must be integers, got '
                             f'{labels.dtype}')
        bad = (labels < 0) | (labels >= self.num_classes)
        if bool(bad.any()):
            values = torch.unique(labels[bad]).tolist()
            raise ValueError(
                f'subclass labels {values[:20]} are out of range: the model '
                f'has {self.num_classes} subclasses (labels 0 to '
                f'{self.num_classes - 1})')

    def drop_labels(self, labels: Tensor) -> Tensor:
        """Rows for training: labels replaced by super or null at random.

        In eval mode the labels' own rows are returned.

        Args:
            labels (Tensor): Subclass ids, shape (N, ).

        Returns:
            Tensor: Row ids, shape (N, ).
        """
        if not self.training:
            return self.rows(labels)
        draw = torch.rand(labels.shape, device=labels.device)
        rows = torch.where(draw < self.super_prob, self.rows(labels, 'super'),
                           self.rows(labels))
        if self.has_null:
            # Out-of-range labels keep their failing rows.
            to_null = (draw >= self.super_prob) & (
                draw < self.super_prob + self.null_prob) & (
                    rows < self.embedding_table.num_embeddings)
            rows = torch.where(to_null, self.rows(labels, 'null'), rows)
        return rows

    def forward(self, rows: Tensor) -> Tensor:
        """Looks up table rows (see :meth:`rows` and :meth:`drop_labels`)."""
        return self.embedding_table(rows)


def _check_taxonomy(num_classes: int, num_superclasses: int,
                    sub2super: Tensor) -> None:
    """Fails with the offending ids when the sub->super map is invalid."""
    if num_classes < 1 or sub2super.ndim != 1 or len(sub2super) != num_classes:
        raise ValueError(
            'sub2super must hold one superclass id per subclass: expected '
            f'{num_classes} entries, got shape {tuple(sub2super.shape)}')
    missing = torch.nonzero(sub2super < 0).flatten().tolist()
    if missing:
        raise ValueError('subclasses without a superclass (negative id): '
                         f'{missing[:20]}')
    beyond = torch.nonzero(sub2super >= num_superclasses).flatten().tolist()
    if beyond:
        raise ValueError(
            f'subclasses {beyond[:20]} map to superclass ids '
            f'{sub2super[beyond[:20]].tolist()}, out of range for '
            f'{num_superclasses} superclasses')
    empty = sorted(set(range(num_superclasses)) - set(sub2super.tolist()))
    if empty:
        raise ValueError(f'superclasses {empty[:20]} have no subclass')
