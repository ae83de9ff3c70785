"""The three-level benchmark of taxonomies of any depth (``tools/demo.py
--ranks``) on the synthetic ``ranked`` set (species, genus, family): the
held-out split for new species, guided sampling judged at every level, and
its tables."""
import csv
import os
import os.path as osp
from typing import Dict, List, NamedTuple, Sequence, Tuple

import torch
from torch import Tensor

from ..models import FineDiffusion, TieredGuidance
from ..taxonomy import Taxonomy
from ..visualization import to_uint8
from .judge import SampleJudge
from .report import markdown_table

# The ranks of the ranked set below the species, finest first.
RANKS = ('genus', 'family')
# A verdict's top-1 of each level, finest first.
LEVELS = (('subclass_top1', 'species'), ('genus_top1', 'genus'),
          ('superclass_top1', 'family'))
HEADER = [f'{level} top-1' for _, level in LEVELS] + ['diversity (real = 1)']


def split_species(train_root: str, out_dir: str, held_out_every: int,
                  shots: int) -> Dict[str, object]:
    """Holds every ``held_out_every``-th species out of the ranked set's
    training split, as the new species to add later.

    Args:
        train_root (str): The split, with its ``annotations.csv``.
        out_dir (str): Where the two annotation files go.
        held_out_every (int): One species in this many is held out.
        shots (int): Images of each held-out species given to add it.

    Returns:
        dict: ``known`` (a CSV of every image of the other species, with
        genus, family and superclass columns: three tiers or two), ``new``
        (a CSV of the first ``shots`` images of each held-out species, with
        genus and family columns) and ``held_out`` (their names).
    """
    with open(osp.join(train_root, 'annotations.csv'), newline='') as f:
        rows = list(csv.DictReader(f))
    names = sorted({row['subclass'] for row in rows})
    held_out = names[held_out_every - 1::held_out_every]
    os.makedirs(out_dir, exist_ok=True)
    paths = dict(known=osp.join(out_dir, 'known.csv'),
                 new=osp.join(out_dir, 'new.csv'))
    columns = dict(known=['path', 'subclass', 'genus', 'family', 'superclass'],
                   new=['path', 'subclass', 'genus', 'family'])
    taken: Dict[str, int] = {}
    chosen: Dict[str, List[dict]] = dict(known=[], new=[])
    for row in rows:
        if row['subclass'] not in held_out:
            chosen['known'].append(row)
        elif taken.setdefault(row['subclass'], 0) < shots:
            taken[row['subclass']] += 1
            chosen['new'].append(row)
    for key, path in paths.items():
        with open(path, 'w', newline='') as f:
            writer = csv.DictWriter(f, columns[key], extrasaction='ignore')
            writer.writeheader()
            writer.writerows(chosen[key])
    return dict(paths, held_out=held_out)


def judge_ids(model_taxonomy: Taxonomy, judge_taxonomy: Taxonomy) -> Tensor:
    """The judge's id of each of the model's subclasses, by name.

    Raises:
        ValueError: For a subclass the judge does not know, naming it.
    """
    index = {name: i for i, name in enumerate(judge_taxonomy.names)}
    missing = [n for n in model_taxonomy.names if n not in index]
    if missing:
        raise ValueError(f'the judge does not know {missing[:5]}')
    return torch.tensor([index[n] for n in model_taxonomy.names])


def judged_samples(model: FineDiffusion, guidance: TieredGuidance,
                   labels: Tensor, judge: SampleJudge, to_judge: Tensor,
                   seed: int, batch_size: int, device: str) -> dict:
    """Samples of ``labels`` (the model's subclass ids, (N, )) in one
    guidance, the same noise for every guidance, judged; ``to_judge`` maps
    the model's ids to the judge's."""
    generator = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        images = torch.cat([
            to_uint8(model.sample(batch, guidance=guidance,
                                  generator=generator)).cpu()
            for batch in labels.to(device).split(batch_size)
        ])
    return judge(images, to_judge[labels])


def guidance_variants(scale: float,
                      hierarchical_scales: Sequence[Sequence[float]]
                      ) -> List[Tuple[str, TieredGuidance]]:
    """Table 2's guidances: none, standard CFG, fine-grained CFG against
    the family (the superclass rank) and against the genus at ``scale``,
    and hierarchical null > family > genus at each triple of scales."""
    variants = [
        ('none', TieredGuidance('none')),
        (f'standard CFG ({scale:g})', TieredGuidance('standard', scale)),
        (f'fine-grained, family reference ({scale:g})',
         TieredGuidance('fine_grained', scale)),
        (f'fine-grained, genus reference ({scale:g})',
         TieredGuidance('fine_grained', scale, reference='genus')),
    ]
    for scales in hierarchical_scales:
        shown = ', '.join(f'{s:g}' for s in scales)
        variants.append((f'hierarchical null > family > genus ({shown})',
                         TieredGuidance('hierarchical',
                                        references=('null', 'family',
                                                    'genus'),
                                        scales=scales)))
    return variants


def level_table(first: str, rows: Sequence[Tuple[str, dict]]) -> str:
    """A Markdown table of verdicts: a title column, then each level's
    top-1 and the diversity."""
    return markdown_table([first] + HEADER, [
        [title] + [f'{verdict[key]:.1%}' for key, _ in LEVELS] +
        [f'{verdict["diversity"]:.2f}'] for title, verdict in rows
    ])


class Draw(NamedTuple):
    """How the benchmark samples: ``per_class`` images of each class,
    ``batch_size`` per call on ``device``, the noise seeded by ``seed``."""
    seed: int
    batch_size: int
    device: str
    per_class: int


def read_names(train_root: str) -> List[str]:
    """The species of the ranked set's split, sorted."""
    with open(osp.join(train_root, 'annotations.csv'), newline='') as f:
        return sorted({row['subclass'] for row in csv.DictReader(f)})


def _verdicts(draw: Draw, model: FineDiffusion, taxonomy: Taxonomy,
              subclasses: Sequence[int], judge: SampleJudge,
              variants: Sequence[Tuple[str, TieredGuidance]]
              ) -> List[Tuple[str, dict]]:
    labels = torch.tensor(list(subclasses)).repeat_interleave(draw.per_class)
    to_judge = judge_ids(taxonomy, judge.taxonomy)
    return [(title, judged_samples(model, guidance, labels, judge, to_judge,
                                   draw.seed, draw.batch_size, draw.device))
            for title, guidance in variants]


def tiers_rows(draw: Draw, model: FineDiffusion, taxonomy: Taxonomy,
               tiers: int, judge: SampleJudge,
               scale: float) -> List[Tuple[str, dict]]:
    """Table 1's rows of a model: no guidance, fine-grained CFG against
    the family and standard CFG, over all its species."""
    variants = guidance_variants(scale, [])[:3]
    return [(f'{tiers} tiers, {title}', verdict) for title, verdict in
            _verdicts(draw, model, taxonomy, range(len(taxonomy.names)),
                      judge, variants)]


def guidance_rows(draw: Draw, model: FineDiffusion, taxonomy: Taxonomy,
                  judge: SampleJudge, scale: float,
                  hierarchical_scales: Sequence[Sequence[float]]
                  ) -> List[Tuple[str, dict]]:
    """Table 2's rows: every guidance of :func:`guidance_variants`."""
    return _verdicts(draw, model, taxonomy, range(len(taxonomy.names)),
                     judge, guidance_variants(scale, hierarchical_scales))


def new_species_rows(draw: Draw, grown: FineDiffusion, taxonomy: Taxonomy,
                     known: int, init: str, judge: SampleJudge,
                     scale: float) -> List[Tuple[str, dict]]:
    """Table 3's rows of one start: the new species (ids ``known`` on),
    without guidance and with fine-grained CFG against the family."""
    variants = guidance_variants(scale, [])[::2]
    return [(f'{init} start, {title}', verdict) for title, verdict in
            _verdicts(draw, grown, taxonomy, range(known, len(
                taxonomy.names)), judge, variants)]


def same_samples(draw: Draw, before: FineDiffusion, after: FineDiffusion,
                 subclasses: Sequence[int]) -> bool:
    """Whether two models sample ``subclasses`` bit-identically from the
    same noise (existing species before and after adding new ones)."""
    labels = torch.tensor(list(subclasses), device=draw.device)
    images = []
    for model in (before, after):
        generator = torch.Generator(draw.device).manual_seed(draw.seed)
        with torch.no_grad():
            images.append(model.sample(labels, generator=generator))
    return torch.equal(*images)
