"""The class-name table of a two-tier taxonomy, and name resolution."""
import difflib
import json
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Sequence


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
    def from_json(cls, path: str) -> 'Taxonomy':
        with open(path) as f:
            return cls.from_dict(json.load(f))

    @classmethod
    def unnamed(cls, sub2super: Sequence[int]) -> 'Taxonomy':
        """Ids as names, when no table is known."""
        sub2super = [int(s) for s in sub2super]
        return cls([f'class {i}' for i in range(len(sub2super))], sub2super,
                   [f'superclass {s}' for s in range(max(sub2super) + 1)])

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
