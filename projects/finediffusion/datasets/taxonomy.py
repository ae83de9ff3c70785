"""The class-name table of a two-tier taxonomy, name resolution, and the
taxonomy readers of the datasets."""
import difflib
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Callable, Dict, List, Optional, Sequence, Union


@dataclass
class Taxonomy:
    """Names of subclasses and superclasses, and the sub->super table.

    Saved as a plain dict in datasets' ``metainfo['taxonomy']`` (and so in
    every checkpoint's ``meta.dataset_meta``) and in exported deltas, so that
    tools resolve class names without the dataset.

    Args:
        names (list[str]): Subclass names (e.g. scientific), by id.
        sub2super (list[int]): Superclass id of each subclass.
        super_names (list[str]): Superclass names, by id.
        common_names (list[str]): Optional second name per subclass.
    """

    names: List[str]
    sub2super: List[int]
    super_names: List[str]
    common_names: List[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict) -> 'Taxonomy':
        return cls(**{k: list(v) for k, v in data.items()})

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
        orphans = [
            sub for sub, sup in enumerate(self.sub2super)
            if not 0 <= sup < len(self.super_names)
        ]
        if orphans:
            raise ValueError(
                f'subclasses without a valid superclass: ids {orphans[:20]} '
                f'(names {[self.names[i] for i in orphans[:5]]})')

    def to_dict(self) -> dict:
        return asdict(self)

    def label(self, sub: int) -> str:
        """A display label: name (common name) / superclass."""
        common = self.common_names[sub] if self.common_names else ''
        name = f'{self.names[sub]} ({common})' if common else self.names[sub]
        return f'{name} / {self.super_names[self.sub2super[sub]]}'

    def resolve(self, query: str) -> List[int]:
        """Subclass ids for an id, a subclass name (scientific or common) or
        a superclass name (all its subclasses), case-insensitive.

        Raises:
            ValueError: For an unknown name, listing the closest ones.
        """
        if query.isdigit():
            sub = int(query)
            if sub >= len(self.names):
                raise ValueError(f'class id {sub} is out of range: the '
                                 f'taxonomy has {len(self.names)} subclasses')
            return [sub]
        key = query.casefold()
        for names in (self.names, self.common_names):
            for sub, name in enumerate(names):
                if name.casefold() == key:
                    return [sub]
        for sup, name in enumerate(self.super_names):
            if name.casefold() == key:
                return [s for s, p in enumerate(self.sub2super) if p == sup]
        candidates = self.names + self.common_names + self.super_names
        close = difflib.get_close_matches(query, candidates, n=5, cutoff=0.5)
        if not close:
            folded = {c.casefold(): c for c in candidates}
            close = [folded[c] for c in difflib.get_close_matches(
                key, list(folded), n=5, cutoff=0.5)]
        hint = f'; closest: {close}' if close else ''
        raise ValueError(f'unknown class or superclass name {query!r}{hint}')


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


# Readers of a dataset's taxonomy from its annotation files, by dataset type.
TAXONOMY_READERS: Dict[str, Callable[..., Taxonomy]] = {}


def taxonomy_reader(name: str):
    """Registers a function that reads a :class:`Taxonomy` from files."""

    def register(fn):
        TAXONOMY_READERS[name] = fn
        return fn

    return register


@lru_cache(maxsize=8)
def _read(name: str, items: tuple) -> Taxonomy:
    return TAXONOMY_READERS[name](**dict(items))


def load_taxonomy(spec: Union[dict, Taxonomy]) -> Taxonomy:
    """The taxonomy a config describes, read once per process.

    The model (table size, sub->super) and the dataset (labels, names) of a
    config share one spec, e.g. ``dict(type='INat2021Dataset',
    ann_file='data/inat2021/train_mini.json', super_rank='supercategory')``,
    so that the taxonomy always comes from the data.
    """
    if isinstance(spec, Taxonomy):
        return spec
    spec = dict(spec)
    name = spec.pop('type')
    if name not in TAXONOMY_READERS:
        raise ValueError(f'no taxonomy reader {name!r}; known: '
                         f'{sorted(TAXONOMY_READERS)}')
    return _read(name, tuple(sorted(spec.items())))
