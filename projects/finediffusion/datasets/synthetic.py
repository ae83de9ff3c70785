"""A synthetic fine-grained image benchmark of two or three tiers,
deterministic from a seed.

It stands in for ImageNet and iNaturalist where neither can be downloaded:

- ``base`` (the pretraining taxonomy): a superclass per shape family, a
  subclass per (family, wide hue range); stripes vary inside each class, so
  that a model pretrained on it can draw every shape, hue and stripe.
- ``fine`` (the fine-grained taxonomy): a superclass per shape family, ten
  subclasses per family that differ only in fine attributes: five hues 12
  degrees apart in the family's band, times a plain or a dark shade.
- ``ranked`` (three tiers): a family per shape, genera per family that
  differ in hue band, species per genus that differ in hue offset within
  the band and in shade. Written as ``root/<family>/<genus>/<species>/``
  and in ``annotations.csv`` (path, subclass, genus, family, superclass),
  so that it reads as three tiers (``HierarchyDataset(ranks=('genus',
  'family'))``) or as two (species and family, the ``superclass`` column).

No subclass of one taxonomy is a subclass of the other. Within every class,
position, size, rotation, saturation, brightness, stripe phase and background
(colour, gradient, noise) vary, so that a class is a distribution, not a
template. Files are written in :class:`HierarchyDataset`'s folder format,
``root/<superclass>/<subclass>/<n>.png``.

The same renderer draws the toy set of the tests and the tiny configs
(:func:`write_toy_hierarchy`): a few shapes as superclasses, hues as their
subclasses, in MMagic's ``BasicConditionalDataset`` layout.
"""
import colorsys
import csv
import json
import os
import os.path as osp
import shutil
from dataclasses import asdict, dataclass
from multiprocessing import Pool
from typing import Dict, List, Optional

import numpy as np
from PIL import Image

# The shape families, as masks over rotated, scaled local coordinates (u, v)
# in about [-1, 1].
# Families six apart in this order share hue bands in the fine taxonomy, so
# every shape is far from the others (a square and a diamond would only
# differ by rotation).
FAMILIES = ('hexagon', 'cross', 'semicircle', 'frame', 'disc', 'star', 'ring',
            'square', 'tee', 'triangle', 'pair', 'bowtie')

# Families of the fine-grained taxonomy, in order: their hue bands are
# spread around the colour circle.
FINE_FAMILIES = FAMILIES[:10]
FINE_HUES_PER_FAMILY = 5
# Consecutive hues along the circle, each family owning a band of five (48
# degrees); the bands of families six apart overlap, and their shapes tell
# them apart. Bands that tile the circle (7.2 degrees) would be finer than
# the demo's diffusion model learns to draw in minutes.
FINE_HUE_STEP = 12.
# The second fine attribute: a factor on the shape's brightness. Not
# stripes: the demo's model does not learn to draw them in its budget
# (docs/experiments.md).
FINE_SHADES = {'plain': 1., 'dark': 0.55}
# The ranked taxonomy: per family two genera whose hue bands start 32
# degrees apart, per genus two hue offsets 14 degrees apart times the two
# shades; families' bands start 60 degrees apart (shapes tell apart the
# families whose bands meet).
RANKED_FAMILY_HUE = 60.
RANKED_GENUS_HUES = (0., 32.)
RANKED_SPECIES_HUES = (0., 14.)
BASE_HUE_RANGES = 5

# Within-class variation of the shape: centre and radius (fractions of the
# side) and rotation (degrees either way). Mild, so that the demo's model
# learns to draw shapes in minutes on a CPU: with shapes anywhere at any
# angle it drew none in that time. Background, brightness, saturation and
# stripe phase vary fully.
POSITION = (0.45, 0.55)
RADIUS = (0.30, 0.34)
ROTATION = 15.

STRIPE_ANGLES = {'horizontal': 0., 'vertical': 90.}
# Render at this multiple of the output size, then average: anti-aliasing.
SUPERSAMPLE = 3
# Bumped whenever the rendering changes, so that stale data is rewritten.
VERSION = 3
# The toy set's superclasses, one shape each.
TOY_SHAPES = ('square', 'disc', 'cross', 'ring')


def _polygon(u: np.ndarray, v: np.ndarray, sides: int,
             radius: float = 1.) -> np.ndarray:
    inside = np.ones(u.shape, dtype=bool)
    apothem = radius * np.cos(np.pi / sides)
    for k in range(sides):
        angle = 2 * np.pi * k / sides + np.pi / 2
        inside &= u * np.cos(angle) + v * np.sin(angle) < apothem
    return inside


def shape_mask(family: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of a shape family at local coordinates (u, v).

    Args:
        family (str): One of :data:`FAMILIES`.
        u (np.ndarray): Horizontal coordinates in shape radii, any shape.
        v (np.ndarray): Vertical coordinates, the shape of ``u``.

    Returns:
        np.ndarray: Bool, the shape of ``u``: inside the shape.

    Raises:
        ValueError: For an unknown family.
    """
    r = np.hypot(u, v)
    au, av = np.abs(u), np.abs(v)
    if family == 'disc':
        return r < 0.9
    if family == 'ring':
        return (r < 1.) & (r > 0.55)
    if family == 'square':
        return np.maximum(au, av) < 0.75
    if family == 'frame':
        return (np.maximum(au, av) < 0.85) & (np.maximum(au, av) > 0.45)
    if family == 'triangle':
        return _polygon(u, v + 0.15, 3, 1.1)
    if family == 'hexagon':
        return _polygon(u, v, 6, 0.95)
    if family == 'star':
        theta = np.arctan2(v, u)
        return r < 0.45 + 0.5 * (0.5 + 0.5 * np.cos(5 * theta))**2
    if family == 'cross':
        return (np.minimum(au, av) < 0.32) & (np.maximum(au, av) < 1.)
    if family == 'semicircle':
        return (r < 1.) & (v > -0.2)
    if family == 'tee':
        return ((au < 1.) & (v > 0.35) & (v < 1.)) | ((au < 0.3) & (v > -1.)
                                                       & (v <= 0.35))
    if family == 'pair':
        return np.hypot(au - 0.52, v) < 0.48
    if family == 'bowtie':
        return (au < 1.) & (av < au) | (au < 0.25) & (av < 0.25)
    raise ValueError(f'unknown shape family {family!r}; known: {FAMILIES}')


@dataclass(frozen=True)
class ClassSpec:
    """How the images of one subclass are drawn.

    Args:
        name (str): Subclass name (its folder).
        superclass (str): Superclass name (its folder).
        family (str): Shape family, one of :data:`FAMILIES`.
        hue (float): Hue centre in degrees.
        hue_spread (float): Hue standard deviation (fine) or half-width of a
            uniform range (base) in degrees.
        uniform_hue (bool): Hue uniform in ``hue +- hue_spread`` instead of
            normal.
        stripes (str, optional): 'none', 'horizontal' or 'vertical', or
            None for a random choice per image.
        shade (float): Factor on the shape's brightness. Defaults to 1.
        genus (str): Genus name (its folder, between superclass and
            subclass) in a three-tier taxonomy; '' for two tiers.
    """

    name: str
    superclass: str
    family: str
    hue: float
    hue_spread: float
    uniform_hue: bool = False
    stripes: Optional[str] = None
    shade: float = 1.
    genus: str = ''


def fine_taxonomy() -> List[ClassSpec]:
    """The fine-grained taxonomy's classes.

    Returns:
        list[ClassSpec]: 100 subclasses in 10 superclasses (shape
        families), the subclasses of a family adjacent.
    """
    specs = []
    for f, family in enumerate(FINE_FAMILIES):
        for k in range(FINE_HUES_PER_FAMILY):
            hue = FINE_HUE_STEP * (f * FINE_HUES_PER_FAMILY + k)
            for shade_name, shade in FINE_SHADES.items():
                specs.append(
                    ClassSpec(f'{family}-hue{hue:03.0f}-{shade_name}',
                              family, family, hue, 1., stripes='none',
                              shade=shade))
    return specs


def base_taxonomy() -> List[ClassSpec]:
    """The base (pretraining) taxonomy's classes.

    Returns:
        list[ClassSpec]: 60 subclasses in 12 superclasses: (family, one
        fifth of the hue circle), stripes of any kind within a class.
    """
    width = 360. / BASE_HUE_RANGES
    return [
        ClassSpec(f'{family}-range{k}', family, family, width * (k + 0.5),
                  width / 2, uniform_hue=True)
        for family in FAMILIES for k in range(BASE_HUE_RANGES)
    ]


def ranked_taxonomy() -> List[ClassSpec]:
    """The three-tier taxonomy's classes.

    Returns:
        list[ClassSpec]: 80 species in 20 genera in 10 families (shapes),
        the species of a genus adjacent.
    """
    specs = []
    for f, family in enumerate(FINE_FAMILIES):
        for g, genus_hue in enumerate(RANKED_GENUS_HUES):
            genus = f'{family}-g{g}'
            for offset in RANKED_SPECIES_HUES:
                hue = RANKED_FAMILY_HUE * f + genus_hue + offset
                for shade_name, shade in FINE_SHADES.items():
                    specs.append(ClassSpec(
                        f'{genus}-hue{hue % 360:03.0f}-{shade_name}', family,
                        family, hue, 1., stripes='none', shade=shade,
                        genus=genus))
    return specs


TAXONOMIES = {'fine': fine_taxonomy, 'base': base_taxonomy,
              'ranked': ranked_taxonomy}


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h / 360. % 1., s, v))


def render(spec: ClassSpec, rng: np.random.Generator,
           size: int = 32) -> np.ndarray:
    """One image of a class.

    Args:
        spec (ClassSpec): The class.
        rng (np.random.Generator): Draws the image's variation.
        size (int): Side in pixels. Defaults to 32.

    Returns:
        np.ndarray: (size, size, 3) uint8 RGB.

    Raises:
        ValueError: For an unknown shape family.
    """
    n = size * SUPERSAMPLE
    yy, xx = (np.mgrid[:n, :n].astype(np.float32) + 0.5) / SUPERSAMPLE

    # Background: a flat low-saturation colour of any brightness.
    image = np.empty((n, n, 3))
    image[:] = _hsv(rng.uniform(0, 360), rng.uniform(0, 0.2),
                    rng.uniform(0.1, 0.9))

    # Shape: position, size and rotation vary.
    cx, cy = rng.uniform(*POSITION, 2) * size
    radius = rng.uniform(*RADIUS) * size
    rot = np.deg2rad(rng.uniform(-ROTATION, ROTATION))
    dx, dy = (xx - cx) / radius, (yy - cy) / radius
    u = dx * np.cos(rot) + dy * np.sin(rot)
    v = -dx * np.sin(rot) + dy * np.cos(rot)
    mask = shape_mask(spec.family, u, v)

    if spec.uniform_hue:
        hue = spec.hue + rng.uniform(-spec.hue_spread, spec.hue_spread)
    else:
        hue = spec.hue + rng.normal(0, spec.hue_spread)
    sat = rng.uniform(0.75, 0.95)
    val = rng.uniform(0.75, 1.) * spec.shade
    stripes = spec.stripes or rng.choice(['none', *STRIPE_ANGLES])
    colour = np.broadcast_to(_hsv(hue, sat, val), image.shape).copy()
    if stripes != 'none':
        # Stripes stay in the image frame whatever the rotation: the angle
        # is the class attribute.
        period = size / 4
        theta = np.deg2rad(STRIPE_ANGLES[stripes])
        across = -xx * np.sin(theta) + yy * np.cos(theta)
        dark = ((across / period + rng.uniform()) % 1.) < 0.5
        colour[dark] = _hsv(hue, sat, val * 0.45)
    image[mask] = colour[mask]

    image = image.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE,
                          3).mean(axis=(1, 3))
    return (image.clip(0, 1) * 255 + 0.5).astype(np.uint8)


def _write_images(folder: str, spec: ClassSpec, rng: np.random.Generator,
                  count: int, size: int, name: str) -> None:
    """``count`` images of a class into an existing folder, file names from
    ``name.format(n)``."""
    for n in range(count):
        Image.fromarray(render(spec, rng, size)).save(
            osp.join(folder, name.format(n)))


def _write_class(job: tuple) -> int:
    root, spec, index, count, size, seed, split = job
    # One stream per (seed, split, class): the files do not depend on the
    # order or the number of workers that write them.
    rng = np.random.default_rng([seed, split, index])
    folder = osp.join(root, _class_folder(spec))
    os.makedirs(folder)
    _write_images(folder, spec, rng, count, size, '{:04d}.png')
    return count


def _class_folder(spec: ClassSpec) -> str:
    """A class's folder under a split: superclass[/genus]/subclass."""
    return osp.join(spec.superclass, *[spec.genus] * bool(spec.genus),
                    spec.name)


def _write_annotations(folder: str, specs: List[ClassSpec],
                       count: int) -> None:
    """``annotations.csv`` of a three-tier split: path, subclass, genus,
    family and superclass (the family) of every image."""
    with open(osp.join(folder, 'annotations.csv'), 'w', newline='') as f:
        out = csv.writer(f)
        out.writerow(['path', 'subclass', 'genus', 'family', 'superclass'])
        for spec in specs:
            for n in range(count):
                out.writerow([f'{_class_folder(spec)}/{n:04d}.png'.replace(
                    os.sep, '/'), spec.name, spec.genus, spec.superclass,
                    spec.superclass])


def _stamp(spec: ClassSpec) -> dict:
    """A class's settings in a split's stamp; without an empty genus, so
    that two-tier sets written before genera existed stay current."""
    return {k: v for k, v in asdict(spec).items() if k != 'genus' or v}


def _is_current(folder: str, stamp: dict) -> bool:
    """Whether a split folder holds the files of ``stamp`` already.

    Raises:
        FileExistsError: For a folder this generator did not write.
    """
    stamp_file = osp.join(folder, 'synthetic.json')
    if osp.exists(stamp_file):
        with open(stamp_file) as f:
            return json.load(f) == stamp
    if osp.exists(folder):
        # Never delete what this generator did not write.
        raise FileExistsError(
            f'{folder} exists but holds no synthetic.json, so it was '
            'not written by write_synthetic_hierarchy: move it or choose '
            'another root')
    return False


def _write_split(folder: str, jobs: List[tuple], stamp: dict,
                 workers: int) -> None:
    """Writes a split beside ``folder``, then replaces it: other settings
    (other class names) leave no stale folder, and an interrupted run
    leaves the previous split whole."""
    partial = folder + '.partial'
    shutil.rmtree(partial, ignore_errors=True)
    jobs = [(partial, *job) for job in jobs]
    if workers > 1:
        with Pool(workers) as pool:
            pool.map(_write_class, jobs)
    else:
        for job in jobs:
            _write_class(job)
    specs = [job[1] for job in jobs]
    if any(spec.genus for spec in specs):
        _write_annotations(partial, specs, stamp['images_per_class'])
    with open(osp.join(partial, 'synthetic.json'), 'w') as f:
        json.dump(stamp, f)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)


def write_synthetic_hierarchy(root: str,
                              taxonomy: str = 'fine',
                              images_per_class: Optional[Dict[str,
                                                              int]] = None,
                              size: int = 32,
                              seed: int = 0,
                              workers: int = 2) -> Dict[str, str]:
    """Writes one taxonomy's splits, unless the same ones are there.

    Args:
        root (str): Output folder; each split goes to ``root/<split>``.
        taxonomy (str): 'fine', 'base' or 'ranked'.
        images_per_class (dict, optional): Images per class of each split.
            Defaults to ``{'train': 100}``.
        size (int): Image side in pixels. Defaults to 32.
        seed (int): The same seed writes the same files. Defaults to 0.
        workers (int): Processes. Defaults to 2.

    Returns:
        dict: The folder of each split.

    Raises:
        ValueError: For an unknown taxonomy.
        FileExistsError: For a split folder that this function did not
            write (it is kept).
    """
    if taxonomy not in TAXONOMIES:
        raise ValueError(f'taxonomy must be one of {sorted(TAXONOMIES)}, '
                         f'got {taxonomy!r}')
    images_per_class = images_per_class or {'train': 100}
    specs = TAXONOMIES[taxonomy]()
    folders = {}
    splits = sorted(images_per_class.items())
    for split_id, (split, count) in enumerate(splits):
        folder = osp.join(root, split)
        folders[split] = folder
        stamp = dict(version=VERSION, taxonomy=taxonomy, split=split,
                     images_per_class=count, size=size, seed=seed,
                     classes=[_stamp(s) for s in specs])
        if not _is_current(folder, stamp):
            _write_split(folder, [(spec, i, count, size, seed, split_id)
                                  for i, spec in enumerate(specs)],
                         stamp, workers)
    return folders


def toy_taxonomy(num_superclasses: int = 2,
                 subclasses_per_super: int = 2) -> List[ClassSpec]:
    """The toy set's classes: a shape per superclass, hues spread around
    the circle as its subclasses.

    Args:
        num_superclasses (int): At most ``len(TOY_SHAPES)``. Defaults to 2.
        subclasses_per_super (int): Hues per shape. Defaults to 2.

    Returns:
        list[ClassSpec]: Named ``<super id>_<shape>_<k>``, so that the
        sorted names (the toy dataset's label order) group the subclasses
        by superclass.

    Raises:
        ValueError: For a number of superclasses outside
            [1, len(TOY_SHAPES)].
    """
    if not 1 <= num_superclasses <= len(TOY_SHAPES):
        raise ValueError(f'num_superclasses must be in [1, '
                         f'{len(TOY_SHAPES)}], got {num_superclasses}')
    return [
        ClassSpec(f'{sup:02d}_{shape}_{k:02d}', shape, shape,
                  360. * k / subclasses_per_super, 1., stripes='none')
        for sup, shape in enumerate(TOY_SHAPES[:num_superclasses])
        for k in range(subclasses_per_super)
    ]


def write_toy_hierarchy(root: str,
                        num_superclasses: int = 2,
                        subclasses_per_super: int = 2,
                        images_per_class: int = 8,
                        size: int = 16,
                        seed: int = 0) -> List[int]:
    """Writes the toy image set, ``root/<subclass>/<n>.png`` (MMagic's
    ``BasicConditionalDataset`` layout), and returns its sub->super table.

    Args:
        root (str): Output folder; existing files of the same names are
            overwritten.
        num_superclasses (int): At most ``len(TOY_SHAPES)``. Defaults to 2.
        subclasses_per_super (int): Hues per shape. Defaults to 2.
        images_per_class (int): Defaults to 8.
        size (int): Image side in pixels. Defaults to 16.
        seed (int): The same seed writes the same files. Defaults to 0.

    Returns:
        list[int]: Superclass id of each subclass, in sorted folder order.

    Raises:
        ValueError: From :func:`toy_taxonomy`.
    """
    specs = toy_taxonomy(num_superclasses, subclasses_per_super)
    for index, spec in enumerate(specs):
        folder = osp.join(root, spec.name)
        os.makedirs(folder, exist_ok=True)
        _write_images(folder, spec, np.random.default_rng([seed, index]),
                      images_per_class, size, '{}.png')
    return [TOY_SHAPES.index(spec.superclass) for spec in specs]
