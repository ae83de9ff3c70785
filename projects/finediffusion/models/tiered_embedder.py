"""Class embedding table with one row per subclass and one per superclass."""
from typing import Optional, Sequence, Union

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmagic.registry import MODELS
from ..taxonomy import check_table

# The tiers a subclass label can be embedded at, by tier id: its own row,
# its superclass's row, the null (unconditional) row.
TIERS = ('sub', 'super', 'null')
SUB, SUPER, NULL = range(len(TIERS))

Tiers = Union[str, Tensor, None]


@MODELS.register_module()
class TieredEmbedder(BaseModule):
    """Embeds subclass labels with a table that also holds superclass rows.

    Rows ``[0, num_classes)`` are subclasses, rows
    ``[num_classes, num_classes + num_superclasses)`` are superclasses and,
    when ``null_prob`` is given, one last row is the unconditional (null)
    class of standard classifier-free guidance.

    The embedder owns label dropout, as DiT's ``LabelEmbedder.token_drop``:
    in training a subclass label is embedded at its superclass with
    probability ``super_prob`` (FineDiffusion) and at the null row with
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

    Raises:
        ValueError: For a sub->super table without one valid superclass per
            subclass, a superclass without subclasses, or probabilities
            whose sum leaves [0, 1].
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
        if (num_classes < 1 or sub2super.ndim != 1
                or len(sub2super) != num_classes):
            raise ValueError(
                'sub2super must hold one superclass id per subclass: expected '
                f'{num_classes} entries, got shape {tuple(sub2super.shape)}')
        check_table(sub2super.tolist(), num_superclasses)
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
        """Table rows of subclass ``labels`` at one tier.

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

        Raises:
            ValueError: For an unknown tier, or 'null' without a null row.
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
        if not self.has_null:
            raise ValueError('this TieredEmbedder has no null row: build '
                             'it with null_prob to use the null tier')
        return torch.full_like(labels, self.embedding_table.num_embeddings - 1)

    def tiered_rows(self, labels: Tensor, tiers: Tensor) -> Tensor:
        """Table rows of subclass ``labels``, each at its own tier.

        Args:
            labels (Tensor): Subclass ids, shape (N, ).
            tiers (Tensor): Tier ids (:data:`SUB`, :data:`SUPER`,
                :data:`NULL`), shape (N, ).

        Returns:
            Tensor: Row ids, shape (N, ); out-of-range labels keep their
            failing rows at every tier.
        """
        rows = torch.where(tiers == SUPER, self.rows(labels, 'super'),
                           self.rows(labels))
        if self.has_null:
            to_null = (tiers == NULL) & (
                rows < self.embedding_table.num_embeddings)
            rows = torch.where(to_null, self.rows(labels, 'null'), rows)
        return rows

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

    def token_drop(self, labels: Tensor) -> Tensor:
        """The tier each label is embedded at in this training step.

        One uniform draw per label: below ``super_prob`` its superclass,
        then, with ``null_prob``, the null row; otherwise its own row. In
        eval mode nothing is drawn and every label keeps its own row.

        Args:
            labels (Tensor): Subclass ids, shape (N, ).

        Returns:
            Tensor: Tier ids, shape (N, ), long.
        """
        tiers = torch.full_like(labels, SUB)
        if not self.training:
            return tiers
        draw = torch.rand(labels.shape, device=labels.device)
        tiers = torch.where(draw < self.super_prob,
                            torch.full_like(labels, SUPER), tiers)
        if self.has_null:
            to_null = (draw >= self.super_prob) & (
                draw < self.super_prob + self.null_prob)
            tiers = torch.where(to_null, torch.full_like(labels, NULL), tiers)
        return tiers

    def forward(self, labels: Tensor, tiers: Tiers = None) -> Tensor:
        """Embeds subclass labels.

        Args:
            labels (Tensor): Subclass ids, shape (N, ).
            tiers (str or Tensor, optional): One tier for all labels
                ('sub', 'super', 'null'), a tier id per label, shape (N, ),
                or None: :meth:`token_drop`'s draw (training) or the labels'
                own rows (eval).

        Returns:
            Tensor: Embeddings, shape (N, embed_dim).
        """
        if tiers is None:
            tiers = self.token_drop(labels)
        rows = (self.rows(labels, tiers) if isinstance(tiers, str) else
                self.tiered_rows(labels, tiers))
        return self.embedding_table(rows)
