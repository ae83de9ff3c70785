"""Adding species to a trained FineDiffusion (``tools/add_species.py``):
the grown taxonomy, which keeps every existing id, and the grown class
table, whose existing rows are copied and whose new rows start at their
nearest existing ancestor's row."""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .models.tiered_embedder import TieredEmbedder
from .taxonomy import Taxonomy, _fold

# How a new row starts: at its nearest existing ancestor's row, at the null
# (unconditional) row, or at random with the spread of the species rows.
INITS = ('ancestor', 'null', 'random')


def _path(lineage: Sequence[str], k: int) -> Tuple[str, ...]:
    """The ancestor at rank k as its lineage from the coarsest rank: two
    genera of one name in two families are two ancestors."""
    return tuple(reversed(lineage[k:]))


def grow_taxonomy(old: Taxonomy, names: Sequence[str],
                  lineages: Sequence[Sequence[str]],
                  common_names: Sequence[str] = ()) -> Taxonomy:
    """``old`` with more subclasses; every id of ``old`` is kept.

    New subclasses take ids ``len(old.names)`` on, in the order given; a new
    ancestor (its lineage not in ``old``) takes the next id of its rank, in
    lineage order.

    Args:
        old (Taxonomy): The trained model's taxonomy.
        names (Sequence[str]): The new subclasses.
        lineages (Sequence[Sequence[str]]): Per new subclass, its ancestor
            names from the finest of ``old``'s ranks to the superclass.
        common_names (Sequence[str]): Optional second names.

    Returns:
        Taxonomy: The grown taxonomy.

    Raises:
        ValueError: For a name that ``old`` has (compared as class queries
            are: case-insensitively, after Unicode normalisation) or that is
            given twice, or a lineage of another length than ``old``'s
            ranks, naming them.
    """
    known = {_fold(n) for n in old.names}
    seen, repeated = set(), []
    for name in names:
        if _fold(name) in known | seen:
            repeated.append(name)
        seen.add(_fold(name))
    if repeated:
        raise ValueError(f'species {repeated[:10]} are in the model already '
                         'or given twice: give each new species once, by a '
                         'name the model does not have')
    depth = len(old.ancestor_ranks)
    for name, lineage in zip(names, lineages):
        if len(lineage) != depth:
            raise ValueError(f'species {name!r} has ancestors {list(lineage)}'
                             f', the model one per rank {old.ancestor_ranks}')
    tables, rank_names = [], []
    for k in range(depth):
        ids = {_path(old.lineage(s), k): old.table(k)[s]
               for s in range(len(old.names))}
        named = list(old.ancestor_names(k))
        for path in sorted({_path(line, k) for line in lineages} - set(ids)):
            ids[path] = len(named)
            named.append(path[-1])
        tables.append(old.table(k) + [ids[_path(line, k)]
                                      for line in lineages])
        rank_names.append(named)
    common: List[str] = []
    if old.common_names or any(common_names):
        common = (list(old.common_names) or [''] * len(old.names)) + (
            list(common_names) or [''] * len(names))
    return Taxonomy(old.names + list(names), tables[-1], rank_names[-1],
                    common, list(old.ranks), tables[:-1], rank_names[:-1])


def _blocks(embedder: TieredEmbedder) -> List[Tuple[int, int]]:
    """(first row, rows) of each level of a class table: the subclasses,
    then each ancestor rank from the finest, the superclasses last."""
    sizes = embedder.rank_sizes + [embedder.num_superclasses]
    return [(0, embedder.num_classes)] + list(
        zip(embedder.rank_offsets, sizes))


def grow_class_table(table: Tensor, old: TieredEmbedder,
                     new: TieredEmbedder, grown: Taxonomy, init: str,
                     generator: Optional[torch.Generator] = None
                     ) -> Tuple[Tensor, List[int]]:
    """The class table of ``new`` from ``old``'s trained ``table``.

    Each existing row (every id is kept, see :func:`grow_taxonomy`) and the
    null row are copied. A new row starts, by ``init``: 'ancestor', at the
    row of its nearest ancestor that ``old`` has (a new species of a known
    genus at the genus row; with no known ancestor, at the null row, or the
    mean superclass row without one); 'null', at the null row; 'random',
    normal with the standard deviation of ``old``'s subclass rows.

    Args:
        table (Tensor): ``old``'s rows, (old rows, D).
        old (TieredEmbedder): The trained model's embedder.
        new (TieredEmbedder): The grown model's embedder.
        grown (Taxonomy): The grown taxonomy.
        init (str): One of :data:`INITS`.
        generator (torch.Generator, optional): For 'random'.

    Returns:
        tuple: The table, (new rows, D), and the ids of its new rows.

    Raises:
        ValueError: For an unknown ``init``, 'null' for a model without a
            null row, or embedders of different null rows.
    """
    if init not in INITS:
        raise ValueError(f'init must be one of {INITS}, got {init!r}')
    if init == 'null' and not old.has_null:
        raise ValueError("init='null' needs a null row: the model was "
                         "trained without null_prob; use 'ancestor' or "
                         "'random'")
    if old.has_null != new.has_null:
        raise ValueError('the grown table must keep the null row choice')
    null = table[-1] if old.has_null else None
    start, new_rows = table.new_zeros(new.embedding_table.weight.shape), []
    fallback = null if null is not None else table[
        old.rank_offsets[-1]:old.rank_offsets[-1] + old.num_superclasses
    ].mean(0)
    spread = table[:old.num_classes].std()
    levels = list(zip(_blocks(old), _blocks(new)))
    for level, ((at, size), (new_at, new_size)) in enumerate(levels):
        start[new_at:new_at + size] = table[at:at + size]
        for node in range(size, new_size):
            new_rows.append(new_at + node)
            if init == 'random':
                start[new_at + node] = spread * torch.randn(
                    table.shape[1], generator=generator, dtype=table.dtype)
                continue
            row = null if init == 'null' else _nearest(
                table, grown, levels, level, node)
            start[new_at + node] = fallback if row is None else row
    if old.has_null:
        start[-1] = null
    return start, new_rows


def _nearest(table: Tensor, grown: Taxonomy, levels: list, level: int,
             node: int) -> Optional[Tensor]:
    """The old row of the nearest coarser ancestor of a new node that the
    old table has, or None."""
    sub = node if level == 0 else grown.table(level - 1).index(node)
    for coarser in range(level + 1, len(levels)):
        (at, size), _ = levels[coarser]
        ancestor = grown.table(coarser - 1)[sub]
        if ancestor < size:
            return table[at + ancestor]
    return None
