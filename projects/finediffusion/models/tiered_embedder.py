"""Class embedding table with one row per subclass and one per ancestor at
every rank of the taxonomy (the superclass's included)."""
from typing import Dict, List, Mapping, Optional, Sequence, Union

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmagic.registry import MODELS
from ..taxonomy import check_table

# The tiers a subclass label can be embedded at, by tier id: its own row,
# its superclass's row, the null (unconditional) row; the ranks between
# subclass and superclass, when the taxonomy has them, follow as ids
# ``len(TIERS) + k``, so that two-tier tier ids stay what they were.
TIERS = ('sub', 'super', 'null')
SUB, SUPER, NULL = range(len(TIERS))

Tiers = Union[str, Tensor, None]


@MODELS.register_module()
class TieredEmbedder(BaseModule):
    """Embeds subclass labels with a table that also holds a row per
    ancestor at every rank.

    Rows ``[0, num_classes)`` are subclasses; then come the ancestors of
    each rank in ``ancestors`` (finest first, e.g. genera, then families),
    then the superclasses and, when ``null_prob`` is given, one last row is
    the unconditional (null) class of standard classifier-free guidance.
    Without ``ancestors`` this is FineDiffusion's two-tier table, rows
    ``[num_classes, num_classes + num_superclasses)`` the superclasses.

    The embedder owns label dropout, as DiT's ``LabelEmbedder.token_drop``:
    in training a subclass label is embedded at its superclass with
    probability ``super_prob`` (FineDiffusion), at the null row with
    probability ``null_prob`` (standard CFG) and at its ancestor of rank k
    with probability ``ancestor_probs[k]``; the draws are exclusive.

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
        ancestors (Mapping[str, Sequence[int]], optional): The ranks
            between subclass and superclass, finest first: rank name to the
            ancestor id of every subclass. Defaults to none (two tiers).
        ancestor_probs (Mapping[str, float], optional): Training
            probability of each rank in ``ancestors``; 0.1 for a rank not
            given.
        init_cfg (dict, optional): Initialization config. Defaults to None.

    Raises:
        ValueError: For a sub->super or rank table without one valid id per
            subclass, an ancestor without subclasses, a probability for a
            rank the table lacks, a rank named as a tier ('sub', 'super',
            'null'), or probabilities whose sum leaves [0, 1].
    """

    def __init__(self,
                 num_classes: int,
                 sub2super: Sequence[int],
                 embed_dim: int,
                 num_superclasses: Optional[int] = None,
                 super_prob: float = 0.1,
                 null_prob: Optional[float] = None,
                 ancestors: Optional[Mapping[str, Sequence[int]]] = None,
                 ancestor_probs: Optional[Mapping[str, float]] = None,
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
        ancestors = dict(ancestors or {})
        probs = dict(ancestor_probs or {})
        _check_ranks(ancestors, probs, num_classes)
        self.ranks: List[str] = list(ancestors)
        self.ancestor_probs = [probs.get(r, 0.1) for r in self.ranks]
        total = super_prob + (null_prob or 0.) + sum(self.ancestor_probs)
        if not 0 <= total <= 1:
            raise ValueError(
                'super_prob + null_prob + ancestor_probs must lie in [0, 1], '
                f'got {super_prob} + {null_prob} + {self.ancestor_probs}')
        self.num_classes = num_classes
        self.num_superclasses = num_superclasses
        self.super_prob = super_prob
        self.null_prob = null_prob
        self.has_null = null_prob is not None
        tables = [torch.as_tensor(list(t), dtype=torch.long, device='cpu')
                  for t in ancestors.values()]
        self.rank_sizes = [int(t.max()) + 1 for t in tables]
        # Where each rank's rows begin, the superclasses' last.
        self.rank_offsets = [num_classes + sum(self.rank_sizes[:k])
                             for k in range(len(tables) + 1)]
        num_rows = (self.rank_offsets[-1] + self.num_superclasses +
                    int(self.has_null))
        self.embedding_table = nn.Embedding(num_rows, embed_dim)
        # A buffer, so that the taxonomy travels with every checkpoint.
        self.register_buffer('sub2super', sub2super)
        # Not saved: the ranks come from the config's taxonomy, so that
        # two-tier state dicts keep their keys; the taxonomy saved with a
        # checkpoint is compared with the config's, ranks included.
        self.register_buffer(
            'sub2ancestor',
            torch.stack(tables) if tables else torch.zeros(
                0, num_classes, dtype=torch.long, device='cpu'),
            persistent=False)

    @property
    def tier_names(self) -> List[str]:
        """Every tier from finest to coarsest: 'sub', the ranks of
        ``ancestors``, 'super', 'null' (when the table has a null row)."""
        return ['sub', *self.ranks, 'super'] + ['null'] * self.has_null

    def tier_id(self, tier: str) -> int:
        """The tier id of a tier name (see :data:`TIERS`).

        Raises:
            ValueError: For a name that is no tier of this table.
        """
        if tier in TIERS:
            return TIERS.index(tier)
        if tier in self.ranks:
            return len(TIERS) + self.ranks.index(tier)
        raise ValueError(f'tier must be one of {TIERS[:2]}, {TIERS[2]!r} '
                         f'or a rank of the table {self.ranks}, got {tier!r}')

    def coarseness(self, tier: str) -> int:
        """The position of a tier in :attr:`tier_names` (0: 'sub'), 'null'
        counted also without a null row; guidance references must be
        coarser than what they guide.

        Raises:
            ValueError: For a name that is no tier of this table.
        """
        self.tier_id(tier)
        return ['sub', *self.ranks, 'super', 'null'].index(tier)

    def rows(self, labels: Tensor, tier: str = 'sub') -> Tensor:
        """Table rows of subclass ``labels`` at one tier.

        Labels outside ``[0, num_classes)`` get row ids past the table, so
        that the lookup fails instead of reading another row (label
        ``num_classes`` would otherwise be an ancestor's row). This costs no
        device synchronisation; entry points check their labels once with
        :meth:`check_labels`, for a message naming them.

        Args:
            labels (Tensor): Subclass ids, shape (N, ).
            tier (str): 'sub', 'super', 'null' or a rank of ``ancestors``.

        Returns:
            Tensor: Row ids, shape (N, ).

        Raises:
            ValueError: For an unknown tier, or 'null' without a null row.
        """
        tier_id = self.tier_id(tier)
        valid = (labels >= 0) & (labels < self.num_classes)
        beyond = torch.full_like(labels, self.embedding_table.num_embeddings)
        if tier_id == SUB:
            return torch.where(valid, labels, beyond)
        if tier_id == NULL:
            if not self.has_null:
                raise ValueError('this TieredEmbedder has no null row: build '
                                 'it with null_prob to use the null tier')
            return torch.full_like(labels,
                                   self.embedding_table.num_embeddings - 1)
        inside = labels.clamp(0, self.num_classes - 1)
        if tier_id == SUPER:
            rows = self.rank_offsets[-1] + self.sub2super[inside]
        else:
            k = tier_id - len(TIERS)
            rows = self.rank_offsets[k] + self.sub2ancestor[k][inside]
        return torch.where(valid, rows, beyond)

    def tiered_rows(self, labels: Tensor, tiers: Tensor) -> Tensor:
        """Table rows of subclass ``labels``, each at its own tier.

        Args:
            labels (Tensor): Subclass ids, shape (N, ).
            tiers (Tensor): Tier ids (:data:`SUB`, :data:`SUPER`,
                :data:`NULL`, ``len(TIERS) + k`` for rank k of
                ``ancestors``), shape (N, ).

        Returns:
            Tensor: Row ids, shape (N, ); out-of-range labels keep their
            failing rows at every tier.
        """
        rows = torch.where(tiers == SUPER, self.rows(labels, 'super'),
                           self.rows(labels))
        for k, rank in enumerate(self.ranks):
            rows = torch.where(tiers == len(TIERS) + k,
                               self.rows(labels, rank), rows)
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
        then, with ``null_prob``, the null row, then, with each of
        ``ancestor_probs``, its ancestor at that rank; otherwise its own
        row. In eval mode nothing is drawn and every label keeps its own
        row.

        Args:
            labels (Tensor): Subclass ids, shape (N, ).

        Returns:
            Tensor: Tier ids, shape (N, ), long.
        """
        tiers = torch.full_like(labels, SUB)
        if not self.training:
            return tiers
        draw = torch.rand(labels.shape, device=labels.device)
        # The bins of the draw, in this order so that a two-tier table
        # draws as it always did.
        bins = [(SUPER, self.super_prob)]
        if self.has_null:
            bins.append((NULL, self.null_prob))
        bins += [(len(TIERS) + k, p)
                 for k, p in enumerate(self.ancestor_probs)]
        low = 0.
        for tier_id, prob in bins:
            inside = (draw >= low) & (draw < low + prob)
            tiers = torch.where(inside, torch.full_like(labels, tier_id),
                                tiers)
            low += prob
        return tiers

    def forward(self, labels: Tensor, tiers: Tiers = None) -> Tensor:
        """Embeds subclass labels.

        Args:
            labels (Tensor): Subclass ids, shape (N, ).
            tiers (str or Tensor, optional): One tier for all labels
                ('sub', 'super', 'null' or a rank), a tier id per label,
                shape (N, ),
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


def _check_ranks(ancestors: Dict[str, Sequence[int]], probs: Dict[str, float],
                 num_classes: int) -> None:
    """Refuses rank tables that are not one id per subclass with every
    ancestor populated, ranks named as tiers, and probabilities of ranks
    the table lacks."""
    reserved = sorted(set(ancestors) & set(TIERS))
    if reserved:
        raise ValueError(f'ranks {reserved} are tier names: name the ranks '
                         'between subclass and superclass otherwise')
    unknown = sorted(set(probs) - set(ancestors))
    if unknown:
        raise ValueError(f'ancestor_probs for ranks {unknown} that the '
                         f'table lacks; its ranks: {list(ancestors)}')
    for rank, table in ancestors.items():
        if len(table) != num_classes:
            raise ValueError(f'rank {rank!r}: {len(table)} ancestor ids for '
                             f'{num_classes} subclasses')
        try:
            check_table(list(table), max(table) + 1)
        except ValueError as error:
            raise ValueError(f'rank {rank!r}: {error}') from None
