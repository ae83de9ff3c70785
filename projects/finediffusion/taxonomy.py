"""The taxonomy type: names of subclasses and of their ancestors at any
number of ranks (the coarsest being the superclass), the tables from
subclasses to ancestors, name resolution, the comparison of two taxonomies, and reading one
from a dataset spec (by the dataset class itself, found in MMagic's
``DATASETS``)."""
import difflib
import os.path as osp
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import List, Mapping, Optional, Sequence, Tuple, Union

from mmagic.registry import DATASETS


SUPER = 'super'
NULL = 'null'


@dataclass
class Taxonomy:
    """Names of subclasses and of their ancestors, and the tables from
    subclasses to ancestors.

    The superclass is the coarsest rank, as in FineDiffusion's two tiers
    (``sub2super``, ``super_names``); ``ranks`` names the ranks from the
    finest ancestor to the superclass (e.g. ``['genus', 'family',
    'supercategory']``) and ``rank_tables`` / ``rank_names`` hold the ranks
    below the superclass, in that order. Two tiers: no ranks, or one.

    Saved as a plain dict in datasets' ``metainfo['taxonomy']`` (and so in
    every checkpoint's ``meta.dataset_meta``) and in exported deltas, so that
    tools resolve class names without the dataset; a dict saved before ranks
    existed reads as two tiers.

    Args:
        names (list[str]): Subclass names (e.g. scientific), by id.
        sub2super (list[int]): Superclass id of each subclass.
        super_names (list[str]): Superclass names, by id.
        common_names (list[str]): Optional second name per subclass.
        ranks (list[str]): Rank names, finest ancestor first, the
            superclass's rank last; empty for an unnamed superclass rank.
        rank_tables (list[list[int]]): For each rank but the last, the
            ancestor id of each subclass.
        rank_names (list[list[str]]): For each rank but the last, the
            ancestor names by id.

    Raises:
        ValueError: For tables of the wrong length or with ids out of range,
            a rank name used twice or reserved ('super', 'null', 'sub'), or
            an ancestor whose subclasses have two different ancestors at a
            coarser rank (a taxonomy is a tree), naming them.
    """

    names: List[str]
    sub2super: List[int]
    super_names: List[str]
    common_names: List[str] = field(default_factory=list)
    ranks: List[str] = field(default_factory=list)
    rank_tables: List[List[int]] = field(default_factory=list)
    rank_names: List[List[str]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict) -> 'Taxonomy':
        return cls(**{k: [list(x) if isinstance(x, (list, tuple)) else x
                          for x in v] for k, v in data.items()})

    @classmethod
    def from_lineages(cls, names: Sequence[str],
                      lineages: Sequence[Sequence[str]],
                      ranks: Sequence[str] = (),
                      common_names: Sequence[str] = ()) -> 'Taxonomy':
        """A taxonomy from each subclass's ancestor names.

        An ancestor is its whole lineage, not its name alone: two genera of
        one name in different families (homonyms, common across kingdoms)
        are two ancestors. Ancestor ids at each rank follow the order of
        their lineages, coarse to fine, so that the ancestors of one parent
        are adjacent (for one rank: name order).

        Args:
            names (Sequence[str]): Subclass names, by id.
            lineages (Sequence[Sequence[str]]): Per subclass, its ancestor
                names from the finest rank to the superclass, one per rank
                (one for an unnamed superclass rank).
            ranks (Sequence[str]): Rank names, finest first; empty for two
                tiers with an unnamed superclass rank.
            common_names (Sequence[str]): Optional second names.

        Raises:
            ValueError: For a lineage of the wrong length, naming the
                subclass.
        """
        depth = max(len(ranks), 1)
        for name, lineage in zip(names, lineages):
            if len(lineage) != depth:
                raise ValueError(f'subclass {name!r} has ancestors '
                                 f'{list(lineage)}, expected one per rank '
                                 f'{list(ranks) or ["superclass"]}')
        tables, rank_names = [], []
        for k in range(depth):
            paths = [tuple(reversed(lineage[k:])) for lineage in lineages]
            ids = {path: i for i, path in enumerate(sorted(set(paths)))}
            tables.append([ids[path] for path in paths])
            rank_names.append([path[-1] for path in sorted(ids)])
        return cls(list(names), tables[-1], rank_names[-1],
                   list(common_names), list(ranks), tables[:-1],
                   rank_names[:-1])

    @classmethod
    def unnamed(cls, sub2super: Sequence[int]) -> 'Taxonomy':
        """Ids as names, when no table is known."""
        sub2super = [int(s) for s in sub2super]
        return cls([f'class {i}' for i in range(len(sub2super))], sub2super,
                   [f'superclass {s}' for s in range(max(sub2super) + 1)])

    def __post_init__(self) -> None:
        if len(self.sub2super) != len(self.names):
            raise ValueError(f'{len(self.names)} subclass names but '
                             f'{len(self.sub2super)} sub->super entries')
        if self.common_names and len(self.common_names) != len(self.names):
            raise ValueError(f'{len(self.common_names)} common names for '
                             f'{len(self.names)} subclasses')
        check_table(self.sub2super, len(self.super_names), self.names,
                    require_populated=False)
        self._check_ranks()

    def _check_ranks(self) -> None:
        below = max(len(self.ranks) - 1, 0)
        if len(self.rank_tables) != below or len(self.rank_names) != below:
            raise ValueError(
                f'ranks {self.ranks} need {below} rank tables and name '
                f'lists (the ranks below the superclass), got '
                f'{len(self.rank_tables)} and {len(self.rank_names)}')
        reserved = sorted(set(self.ranks) & {SUPER, NULL, 'sub'})
        if reserved or len(set(self.ranks)) != len(self.ranks):
            raise ValueError(f'rank names must be distinct and none of '
                             f"'sub', 'super', 'null': got {self.ranks}")
        for rank, table, names in zip(self.ranks, self.rank_tables,
                                      self.rank_names):
            if len(table) != len(self.names):
                raise ValueError(f'rank {rank!r}: {len(table)} entries for '
                                 f'{len(self.names)} subclasses')
            try:
                check_table(table, len(names), self.names)
            except ValueError as error:
                raise ValueError(f'rank {rank!r}: {error}') from None
        tables = self.rank_tables + [self.sub2super]
        for k in range(len(tables) - 1):
            parent = {}
            for sub, (node, up) in enumerate(zip(tables[k], tables[k + 1])):
                first = parent.setdefault(node, (up, sub))
                if first[0] != up:
                    raise ValueError(
                        f'{self.ranks[k]} {self.rank_names[k][node]!r} has '
                        f'subclasses in two {self.rank_of(k + 1)} groups: '
                        f'{self.names[first[1]]!r} in '
                        f'{self.ancestor_names(k + 1)[first[0]]!r}, '
                        f'{self.names[sub]!r} in '
                        f'{self.ancestor_names(k + 1)[up]!r}')

    def to_dict(self) -> dict:
        data = asdict(self)
        if not self.ranks:
            # Two-tier dicts stay as they were before ranks existed.
            for key in ('ranks', 'rank_tables', 'rank_names'):
                data.pop(key)
        return data

    @property
    def super_rank(self) -> str:
        """The superclass rank's name ('super' when unnamed)."""
        return self.ranks[-1] if self.ranks else SUPER

    @property
    def ancestor_ranks(self) -> List[str]:
        """Every ancestor rank, finest first, the superclass rank last."""
        return self.ranks[:-1] + [self.super_rank]

    def rank_of(self, index: int) -> str:
        """The name of ancestor rank ``index`` (0: the finest)."""
        return self.ancestor_ranks[index]

    def rank_index(self, rank: str) -> int:
        """The position of a rank among :attr:`ancestor_ranks`; 'super'
        names the superclass rank.

        Raises:
            ValueError: For a rank the taxonomy does not have.
        """
        if rank == SUPER:
            return len(self.ancestor_ranks) - 1
        if rank not in self.ancestor_ranks:
            raise ValueError(f'unknown rank {rank!r}: the taxonomy has '
                             f'{self.ancestor_ranks}')
        return self.ancestor_ranks.index(rank)

    def table(self, rank: Union[str, int]) -> List[int]:
        """The ancestor id of each subclass at a rank (name or index)."""
        k = rank if isinstance(rank, int) else self.rank_index(rank)
        return (self.rank_tables + [self.sub2super])[k]

    def ancestor_names(self, rank: Union[str, int]) -> List[str]:
        """The ancestor names at a rank (name or index), by id."""
        k = rank if isinstance(rank, int) else self.rank_index(rank)
        return (self.rank_names + [self.super_names])[k]

    def lineage(self, sub: int) -> Tuple[str, ...]:
        """The ancestor names of subclass ``sub``, finest rank first, as
        :meth:`from_lineages` takes them."""
        return tuple(
            self.ancestor_names(k)[self.table(k)[sub]]
            for k in range(len(self.ancestor_ranks)))

    def label(self, sub: int) -> str:
        """A display label: name (common name) / superclass."""
        common = self.common_names[sub] if self.common_names else ''
        name = f'{self.names[sub]} ({common})' if common else self.names[sub]
        return f'{name} / {self.super_names[self.sub2super[sub]]}'

    def rank_label(self, rank: str, sub: int) -> str:
        """A display label of the ancestor of subclass ``sub`` at a rank,
        e.g. 'Nymphalidae (family row)'."""
        k = self.rank_index(rank)
        name = self.ancestor_names(k)[self.table(k)[sub]]
        return f'{name} ({self.rank_of(k)} row)'

    def resolve(self, query: str) -> List[int]:
        """Subclass ids for a class id, a subclass name (scientific or
        common) or the name of an ancestor at any rank (all its
        subclasses).

        Rules: ``id:N`` is always subclass id N; a plain number is id N and
        also a name (class folders are often named by numbers, and ids
        follow name order, so folder "2" need not be id 2); names compare
        case-insensitively after Unicode normalisation (a name typed in
        decomposed form matches its composed spelling). A query with more
        than one reading, e.g. "2" as id 2 and as the name of id 4, or a
        common name two species share, is refused listing the readings.

        Raises:
            ValueError: For an empty query; an id out of range; an unknown
                name, listing the closest ones; a query of several
                readings, listing them.
        """
        return self._meaning(query)[1]

    def targets(self, query: str) -> List[Tuple[int, str]]:
        """What to sample for a class query: (subclass id, rank) pairs,
        the rank 'sub' for a subclass's own row.

        Resolves as :meth:`resolve`, and then: a subclass, or a superclass
        (all its subclasses, as two-tier taxonomies always did), draws from
        the subclasses' own rows; an ancestor below the superclass rank
        draws from its own row (one target: its first subclass at that
        rank); ``<rank>:<name>`` draws from that rank's row at any rank,
        the superclass's included (e.g. ``supercategory:Aves``).

        Raises:
            ValueError: As :meth:`resolve`; for ``<rank>:<name>`` whose
                name is not an ancestor at that rank.
        """
        prefix, _, name = query.partition(':')
        if name and prefix in self.ancestor_ranks + [SUPER]:
            k = self.rank_index(prefix)
            names = self.ancestor_names(k)
            key = _fold(name)
            node = next((i for i, n in enumerate(names) if _fold(n) == key),
                        None)
            if node is None:
                raise ValueError(f'no {self.rank_of(k)} named {name!r}'
                                 f'{_closest(key, names)}')
            return [(self.table(k).index(node), self.rank_of(k))]
        rank, subs = self._meaning(query)
        if rank is None or rank == self.super_rank:
            return [(sub, 'sub') for sub in subs]
        return [(subs[0], rank)]

    def _meaning(self, query: str) -> Tuple[Optional[str], List[int]]:
        """The one reading of a class query: the rank it names (None for a
        subclass) and its subclass ids."""
        if not query.strip():
            raise ValueError(f'empty class name {query!r}: give a class id, '
                             'a subclass or a superclass name')
        forced = re.fullmatch(r'id:([0-9]+)', query)
        if forced:
            return None, [self._subclass_id(forced.group(1))]
        key = _fold(query)
        # Every reading of the query: common names repeat in real
        # taxonomies, a subclass may share its superclass's name, and a
        # number may be a name, so the first match could silently be the
        # wrong class.
        meanings = {}
        if re.fullmatch(r'[0-9]+', query) and int(query) < len(self.names):
            sub = int(query)
            meanings[(None, (sub, ))] = (
                f'subclass id {sub} ({self.label(sub)})')
        for names in (self.names, self.common_names):
            for sub, name in enumerate(names):
                if name and _fold(name) == key:
                    meanings.setdefault(
                        (None, (sub, )),
                        f'subclass id {sub} ({self.label(sub)})')
        for k, rank in enumerate(self.ancestor_ranks):
            table = self.table(k)
            word = 'superclass' if rank == self.super_rank else rank
            for node, name in enumerate(self.ancestor_names(k)):
                if name and _fold(name) == key:
                    subs = tuple(s for s, p in enumerate(table) if p == node)
                    meanings.setdefault(
                        (rank, subs), f'{word} {name!r} (id {node}, '
                        f'{len(subs)} subclasses)')
        if len(meanings) > 1:
            ids = ' or '.join(f'id:{subs[0]}' for rank, subs in meanings
                              if rank is None)
            raise ValueError(
                f'class {query!r} is ambiguous: it names '
                f'{" and ".join(meanings.values())}; give a subclass id as '
                f'{ids or "id:N"}')
        if meanings:
            rank, subs = next(iter(meanings))
            return rank, list(subs)
        if re.fullmatch(r'[0-9]+', query):
            return None, [self._subclass_id(query)]
        raise ValueError(f'unknown class or superclass name {query!r}'
                         f'{self._closest(key)}')

    def _closest(self, key: str) -> str:
        """The names closest to a folded unknown name, for its message."""
        return _closest(key, self.names + self.common_names +
                        self.super_names + sum(self.rank_names, []))

    def _subclass_id(self, digits: str) -> int:
        sub = int(digits)
        if sub >= len(self.names):
            raise ValueError(f'class id {sub} is out of range: the '
                             f'taxonomy has {len(self.names)} subclasses')
        return sub


def _closest(key: str, candidates: Sequence[str]) -> str:
    """'; closest: [...]', the candidate names closest to a folded unknown
    name, for its message ('' when none is close)."""
    folded = {}
    for candidate in candidates:
        if candidate:
            folded.setdefault(_fold(candidate), candidate)
    close = [folded[c] for c in difflib.get_close_matches(
        key, list(folded), n=5, cutoff=0.5)]
    return f'; closest: {close}' if close else ''


def _fold(name: str) -> str:
    """The key names are compared by: Unicode's canonical caseless form
    (NFD, case-folded, NFD again), so that composed and decomposed
    spellings of one name, and its cases, are one key."""
    return unicodedata.normalize(
        'NFD', unicodedata.normalize('NFD', name).casefold())


def taxonomy_of(dataset_meta: Optional[dict],
                sub2super: Sequence[int]) -> Taxonomy:
    """The taxonomy saved in a dataset's metainfo, or the class names MMagic
    datasets keep (``classes``), or ids as names."""
    dataset_meta = dataset_meta or {}
    if 'taxonomy' in dataset_meta:
        return Taxonomy.from_dict(dataset_meta['taxonomy'])
    classes = dataset_meta.get('classes')
    if classes and len(classes) == len(sub2super):
        unnamed = Taxonomy.unnamed(sub2super)
        return Taxonomy(list(classes), unnamed.sub2super, unnamed.super_names)
    return Taxonomy.unnamed(sub2super)


def check_table(sub2super: Sequence[int],
                num_superclasses: int,
                names: Optional[Sequence[str]] = None,
                require_populated: bool = True) -> None:
    """Fails with the offending ids when a sub->super table is invalid.

    Args:
        sub2super (Sequence[int]): Superclass id of each subclass, (S, ).
        num_superclasses (int): Number of superclasses.
        names (Sequence[str], optional): Subclass names, for messages.
        require_populated (bool): Also refuse a superclass without
            subclasses (a class table row nothing trains). Defaults to True.

    Raises:
        ValueError: Naming the subclasses with a negative or out-of-range
            superclass id, or the superclasses without a subclass.
    """
    table = [int(s) for s in sub2super]

    def named(ids: List[int]) -> str:
        return f' (names {[names[i] for i in ids[:5]]})' if names else ''

    missing = [sub for sub, sup in enumerate(table) if sup < 0]
    if missing:
        raise ValueError('subclasses without a superclass (negative id): '
                         f'{missing[:20]}{named(missing)}')
    beyond = [sub for sub, sup in enumerate(table) if sup >= num_superclasses]
    if beyond:
        raise ValueError(
            f'subclasses {beyond[:20]} map to superclass ids '
            f'{[table[i] for i in beyond[:20]]}, out of range for '
            f'{num_superclasses} superclasses{named(beyond)}')
    empty = sorted(set(range(num_superclasses)) - set(table))
    if require_populated and empty:
        raise ValueError(f'superclasses {empty[:20]} have no subclass')


@lru_cache(maxsize=8)
def _read(dataset_cls: type, items: tuple) -> Taxonomy:
    return dataset_cls.read_taxonomy(**dict(items))


def dataset_class(name: str) -> type:
    """The dataset class a taxonomy spec names, from MMagic's ``DATASETS``
    (which imports this project's datasets on first use).

    Raises:
        ValueError: For a name no registered dataset has, or a dataset
            that cannot read a taxonomy from its files alone.
    """
    cls = DATASETS.get(name)
    if cls is None:
        raise ValueError(f'taxonomy spec type {name!r} is not a registered '
                         'dataset')
    if not callable(getattr(cls, 'read_taxonomy', None)):
        raise ValueError(
            f'dataset {name!r} has no read_taxonomy: it cannot give the '
            "model a taxonomy; use one of this project's datasets "
            '(HierarchyDataset, INat2021Dataset, VegFruDataset, '
            'LatentDataset) or a list of superclass ids')
    return cls


def read_taxonomy(spec: Union[Mapping, 'Taxonomy']) -> 'Taxonomy':
    """The taxonomy a dataset spec describes, read once per process.

    The model (table size, sub->super) and the datasets (labels, names) of a
    config share one spec, e.g. ``dict(type='INat2021Dataset',
    ann_file='data/inat2021/train_mini.json', super_rank='supercategory')``,
    so that the taxonomy always comes from the data; the dataset class reads
    it (its ``read_taxonomy`` classmethod) without building the dataset.

    Raises:
        ValueError: From :func:`dataset_class`, or the dataset's reader
            (a missing or malformed annotation file, named).
    """
    if isinstance(spec, Taxonomy):
        return spec
    spec = dict(spec)
    cls = dataset_class(spec.pop('type'))
    # Hashable for the cache: configs spell a rank list as a list.
    return _read(cls, tuple(sorted(
        (k, tuple(v) if isinstance(v, list) else v) for k, v in spec.items())))


# A taxonomy with names, or only the sub->super table (all a model holds).
TaxonomyLike = Union[Taxonomy, Sequence[int]]


def _table(taxonomy: TaxonomyLike) -> List[int]:
    return [int(s) for s in (taxonomy.sub2super if isinstance(
        taxonomy, Taxonomy) else taxonomy)]


def _subclass(sub: int, *taxonomies: TaxonomyLike) -> str:
    names = [t.names[sub] for t in taxonomies
             if isinstance(t, Taxonomy) and sub < len(t.names)]
    return f'{names[0]!r} (id {sub})' if names else f'id {sub}'


def _superclass(taxonomy: TaxonomyLike, sup: int) -> str:
    if isinstance(taxonomy, Taxonomy):
        return f'{taxonomy.super_names[sup]!r} (id {sup})'
    return f'id {sup}'


def check_same_taxonomy(expected: TaxonomyLike, actual: TaxonomyLike,
                        expected_from: str, actual_from: str) -> None:
    """Fails at the first subclass whose name or superclass differs.

    The one comparison for every place where a second taxonomy meets the
    model's: training, validation and test data, the taxonomy saved in a
    checkpoint or delta, a latent cache. Class ids index the model's table,
    so the taxonomies must agree id by id. Names (subclass and superclass)
    are compared when both sides have them; a plain sub->super list (what
    a model's buffer holds) is compared by ids. Common names are display
    text and not compared.

    Args:
        expected (Taxonomy or Sequence[int]): The model's taxonomy.
        actual (Taxonomy or Sequence[int]): The other one.
        expected_from (str): What ``expected`` is and its files, for the
            message, e.g. "the model (INat2021Dataset(.../train_mini.json))".
        actual_from (str): The same for ``actual``.

    Raises:
        ValueError: Naming the first differing subclass (name and id), its
            superclass on both sides (names and ids) and both sources; or
            both subclass counts.
    """
    named = isinstance(expected, Taxonomy) and isinstance(actual, Taxonomy)
    want, got = _table(expected), _table(actual)
    where = 'the taxonomies disagree'
    for sub in range(min(len(want), len(got))):
        if named and expected.names[sub] != actual.names[sub]:
            raise ValueError(
                f'{where}: subclass id {sub} is {expected.names[sub]!r} in '
                f'{expected_from} but {actual.names[sub]!r} in {actual_from}')
        differs = want[sub] != got[sub] or named and (
            expected.super_names[want[sub]] != actual.super_names[got[sub]])
        if differs:
            raise ValueError(
                f'{where}: subclass {_subclass(sub, expected, actual)} '
                f'belongs to superclass {_superclass(expected, want[sub])} '
                f'in {expected_from} but to superclass '
                f'{_superclass(actual, got[sub])} in {actual_from}')
    if len(want) != len(got):
        first = min(len(want), len(got))
        longer = actual if len(got) > len(want) else expected
        raise ValueError(
            f'{where}: {len(want)} subclasses in {expected_from} but '
            f'{len(got)} in {actual_from} (the first unmatched: '
            f'{_subclass(first, longer)})')
    if named:
        _check_same_ranks(expected, actual, expected_from, actual_from)


def _check_same_ranks(expected: Taxonomy, actual: Taxonomy,
                      expected_from: str, actual_from: str) -> None:
    """Fails at the first rank, or the first subclass of a rank below the
    superclass, that differs between two taxonomies of equal subclasses."""
    if expected.ancestor_ranks[:-1] != actual.ancestor_ranks[:-1]:
        raise ValueError(
            f'the taxonomies disagree: ranks {expected.ancestor_ranks} in '
            f'{expected_from} but {actual.ancestor_ranks} in {actual_from}')
    for k, rank in enumerate(expected.ranks[:-1]):
        mine, theirs = expected.ancestor_names(k), actual.ancestor_names(k)
        for sub, (a, b) in enumerate(zip(expected.table(k),
                                         actual.table(k))):
            if mine[a] != theirs[b]:
                raise ValueError(
                    f'the taxonomies disagree: subclass '
                    f'{_subclass(sub, expected)} belongs to {rank} '
                    f'{mine[a]!r} in {expected_from} but to {theirs[b]!r} '
                    f'in {actual_from}')


def taxonomy_source(spec: Mapping) -> str:
    """The files a taxonomy spec reads, for messages, e.g.
    "INat2021Dataset(data/inat2021/train_mini.json, super_rank='order')"."""
    rest = dict(spec)
    kind = rest.pop('type', 'taxonomy')
    root = rest.pop('data_root', '') or ''
    place = rest.pop('ann_file', '') or rest.pop('cache_dir', '') or ''
    place = osp.join(root, place) if place else root
    args = [place] + [f'{k}={v!r}' for k, v in sorted(rest.items())]
    return f'{kind}({", ".join(a for a in args if a)})'


def spec_taxonomy(spec: Union[Mapping, Taxonomy, Sequence[int]]
                  ) -> Tuple[TaxonomyLike, str]:
    """The taxonomy a model config gives (``model.backbone.taxonomy``) and
    where it comes from: a :class:`Taxonomy` read from the files of a
    dataset spec, or a plain sub->super list (ids only)."""
    if isinstance(spec, Taxonomy):
        return spec, 'model.backbone.taxonomy'
    if isinstance(spec, Mapping):
        return read_taxonomy(spec), taxonomy_source(spec)
    return _table(spec), 'model.backbone.taxonomy (a list of ids)'

