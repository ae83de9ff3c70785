"""Generates images for classes given by id or name, with a labelled grid.

Classes: ids, subclass names (scientific or common), superclass names (all
their subclasses) or names at any other rank of the taxonomy saved with the
weights (e.g. a family: drawn from the family's own row, so labelled in the
grid); RANK:NAME draws from the row of NAME at RANK, the superclass rank's
included. Names compare case-insensitively after Unicode normalisation. A
number is an id and also a name (folders named 1, 2, ...): one that reads
both ways is refused, and id:N is always id N. Writes OUT/grid.png (a row
per class, labelled; a superclass's subclasses adjacent),
OUT/<id>_<name>/<n>.png per subclass and OUT/<rank>_<id>_<name>/<n>.png per
ancestor row.

Guidance: fine_grained against the superclass (default) or --reference
RANK; hierarchical over --references coarse to fine with --scales; standard
(against the null row); none.

Examples:
    python tools/sample.py CONFIG delta.safetensors --classes "Danaus plexippus" Aves -n 4
    python tools/sample.py CONFIG iter_1000.pth --classes 3 7 --scheduler dpm++ --num-sampling-steps 25
    python tools/sample.py CONFIG iter_1000.pth --classes Nymphalidae --reference null
    python tools/sample.py CONFIG iter_1000.pth --classes 3 --guidance hierarchical --references null family genus --scales 1 2 4
"""
import argparse
import os
import os.path as osp
import re
import time
from typing import List

import torch
from PIL import Image
from tqdm import tqdm

import finediffusion  # noqa: F401,I001  (compatibility fixes first)
from finediffusion.cli import class_query, positive_int
from finediffusion.config import load_config
from finediffusion.datasets import Taxonomy
from finediffusion.inference import (add_precision_arguments,
                                      apply_precision, load_for_sampling)
from finediffusion.models import FineDiffusion, TieredGuidance
from finediffusion.models.guidance import MODES
from finediffusion.visualization import (Target, grid_of_rows,
                                         rows_of_classes, to_uint8)

# The --scheduler choices: ADM's respaced DDPM (DiT's reference sampler) and
# two diffusers schedulers.
SCHEDULERS = {
    'ddpm': None,
    'ddim': dict(type='DDIMScheduler'),
    'dpm++': dict(type='DPMSolverMultistepScheduler'),
}


def parse_args() -> argparse.Namespace:
    """The command line; a contradicting one is a usage error."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='the training config')
    parser.add_argument('weights', help='a delta (.safetensors) or a '
                        'training checkpoint (.pth)')
    parser.add_argument('--base', help='official DiT checkpoint (default: '
                        "the config's model.backbone.pretrained)")
    parser.add_argument('--classes', nargs='+', required=True,
                        type=class_query,
                        help='class ids (N or id:N), subclass names '
                        '(scientific or common), names at any rank, or '
                        'RANK:NAME; a number that is also a class name is '
                        'refused as ambiguous, id:N is always an id')
    parser.add_argument('-n', '--per-class', type=positive_int, default=4,
                        help='images per class (default: 4)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--guidance', default='fine_grained', choices=MODES)
    parser.add_argument('--guidance-scale', '--scale', type=float,
                        default=4.0, help='guidance scale (default: 4)')
    parser.add_argument('--reference', help="fine_grained: the reference "
                        "rank, e.g. genus, family or null (default: the "
                        "superclass)")
    parser.add_argument('--references', nargs='+', default=(),
                        help='hierarchical: the ranks coarse to fine, e.g. '
                        'null family genus')
    parser.add_argument('--scales', nargs='+', type=float, default=(),
                        help='hierarchical: a scale per reference (default: '
                        '--guidance-scale each)')
    parser.add_argument('--scheduler', '--sampler', default='ddpm',
                        choices=sorted(SCHEDULERS))
    parser.add_argument('--num-sampling-steps', '--steps', type=positive_int,
                        default=None,
                        help='default: 250 for ddpm, 25 otherwise')
    parser.add_argument('--batch-size', type=positive_int, default=None,
                        help='default: 256 on a GPU, 8 on the CPU; halved '
                        'on out-of-memory')
    parser.add_argument('--device', default=None,
                        help='default: cuda when available')
    parser.add_argument('--out', default='work_dirs/samples')
    add_precision_arguments(parser)
    args = parser.parse_args()
    if args.scheduler == 'ddpm' and args.num_sampling_steps == 1:
        parser.error('argument --num-sampling-steps/--steps: DDPM sampling '
                     'takes at least 2 steps (--scheduler ddpm), got 1')
    try:
        args.tiered_guidance = TieredGuidance(
            args.guidance, args.guidance_scale, reference=args.reference,
            references=args.references, scales=args.scales)
    except ValueError as error:
        parser.error(f'argument --guidance: {error}')
    return args


def slug(name: str) -> str:
    """A class name as a folder name: letters, digits and '_', at most 60
    characters."""
    return re.sub(r'[^A-Za-z0-9]+', '_', name).strip('_')[:60]


def generate(model: FineDiffusion, labels: torch.Tensor, ranks: List[str],
             args: argparse.Namespace, batch_size: int) -> List[torch.Tensor]:
    """Images for ``labels`` in batches of one rank each, halving the batch
    on OOM.

    Args:
        model (FineDiffusion): The model, on ``labels``' device.
        labels (Tensor): (N, ) subclass ids.
        ranks (list[str]): The rank each label is drawn at, N of them:
            'sub' (its own row) or an ancestor's rank.
        args (argparse.Namespace): ``tiered_guidance``, ``scheduler``,
            ``num_sampling_steps`` and ``seed`` of the command line.
        batch_size (int): Images per first try of a batch.

    Returns:
        list[Tensor]: N images, each (3, H, W) RGB in [-1, 1], on the CPU.

    Raises:
        torch.OutOfMemoryError: When even one image does not fit.
        ValueError: From the model, e.g. more steps than its diffusion has.
    """
    steps = args.num_sampling_steps or (250 if args.scheduler == 'ddpm' else
                                        25)
    images, start, index = [], 0, 0
    bar = tqdm(total=len(labels), desc='images', unit='img')
    while start < len(labels):
        rank = ranks[start]
        end = min(start + batch_size, len(labels))
        end = next((i for i in range(start, end) if ranks[i] != rank), end)
        chunk = labels[start:end]
        generator = torch.Generator(labels.device).manual_seed(args.seed +
                                                               index)
        began = time.perf_counter()
        try:
            out = model.sample(chunk, steps, args.tiered_guidance,
                               scheduler=SCHEDULERS[args.scheduler],
                               generator=generator, rank=rank).cpu()
        except torch.OutOfMemoryError:
            if batch_size == 1:
                raise
            batch_size //= 2
            torch.cuda.empty_cache()
            continue
        seconds = time.perf_counter() - began
        images.extend(out)
        start += len(chunk)
        index += 1
        bar.update(len(chunk))
        # The first batch includes compilation, the next ones do not.
        bar.write(f'batch {index}: {len(chunk)} images, '
                  f'{len(chunk) / seconds:.2f} img/s')
    bar.close()
    return images


def folder_name(taxonomy: Taxonomy, target: Target) -> str:
    """<id>_<name> of a subclass, <rank>_<id>_<name> of an ancestor row."""
    sub, rank = target
    if rank == 'sub':
        return f'{sub}_{slug(taxonomy.names[sub])}'
    node = taxonomy.table(rank)[sub]
    name = taxonomy.ancestor_names(rank)[node]
    return f'{taxonomy.rank_of(taxonomy.rank_index(rank))}_{node}_{slug(name)}'


def write_outputs(images: torch.Tensor, targets: List[Target],
                  taxonomy: Taxonomy, out: str) -> None:
    """A folder of PNGs per target (see :func:`folder_name`) and
    OUT/grid.png, a labelled row per target.

    Args:
        images (Tensor): (len(targets) * k, 3, H, W) uint8 RGB, ``k``
            consecutive images of each target.
        targets (list): (subclass id, rank) pairs, in row order.
        taxonomy (Taxonomy): Names of the folders and rows.
        out (str): An existing output folder.
    """
    rows = rows_of_classes(images, len(targets))
    for target, row in zip(targets, rows):
        folder = osp.join(out, folder_name(taxonomy, target))
        os.makedirs(folder, exist_ok=True)
        for n, image in enumerate(row):
            Image.fromarray(image).save(osp.join(folder, f'{n}.png'))
    grid_of_rows(rows, targets, taxonomy).save(osp.join(out, 'grid.png'))


def resolve_targets(queries: List[str], taxonomy: Taxonomy,
                    model: FineDiffusion,
                    guidance: TieredGuidance) -> List[Target]:
    """The (subclass id, rank) rows of the class queries, each once, in
    the order asked (see :meth:`Taxonomy.targets`), checked against the
    guidance.

    Raises:
        SystemExit: For an unknown or ambiguous class, or a rank the
            guidance cannot guide from (e.g. a genus row guided against the
            genus).
    """
    targets: List[Target] = []
    try:
        for query in queries:
            targets.extend(t for t in taxonomy.targets(query)
                           if t not in targets)
        for rank in dict.fromkeys(rank for _, rank in targets):
            guidance.check(model.backbone, rank)
    except ValueError as error:
        raise SystemExit(f'error: {error}')
    return targets


def main() -> None:
    """Loads the weights, samples the classes, writes images and grid."""
    args = parse_args()
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        cfg = load_config(args.config)
    except ValueError as error:
        raise SystemExit(f'error: {error}')
    precision = apply_precision(cfg, args, device.startswith('cuda'))
    try:
        model, taxonomy = load_for_sampling(cfg, args.weights, args.base,
                                            device)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f'error: {error}')
    if precision == 'bfloat16':
        model.cast_backbone(torch.bfloat16)
    targets = resolve_targets(args.classes, taxonomy, model,
                              args.tiered_guidance)
    # Before the long part: an unusable output folder fails now.
    os.makedirs(args.out, exist_ok=True)
    labels = torch.tensor([sub for sub, _ in targets],
                          device=device).repeat_interleave(args.per_class)
    ranks = [rank for _, rank in targets for _ in range(args.per_class)]
    batch_size = args.batch_size or (256 if device.startswith('cuda') else 8)
    try:
        images = to_uint8(torch.stack(generate(model, labels, ranks, args,
                                               batch_size)))
    except ValueError as error:
        # E.g. more DDPM steps than the model's diffusion has.
        raise SystemExit(f'error: {error}')
    write_outputs(images, targets, taxonomy, args.out)
    print(f'wrote {len(images)} images of {len(targets)} classes and '
          f'{osp.join(args.out, "grid.png")}')


if __name__ == '__main__':
    main()
