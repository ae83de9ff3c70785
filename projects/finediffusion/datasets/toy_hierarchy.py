"""A tiny two-tier image set that needs no download.

Superclasses differ in shape (square, disc, cross, ...), their subclasses in
hue; position and size vary per image. Images are written as
``root/<subclass>/<n>.png`` (MMagic's ``BasicConditionalDataset`` layout),
with subclass folders named ``<super id>_<shape>_<k>`` so that the sorted
folder order (the dataset's label order) groups subclasses by superclass.
"""
import colorsys
import os
import os.path as osp
from typing import List

import numpy as np
from PIL import Image

SHAPES = ('square', 'disc', 'cross', 'ring')


def _draw(shape: str, size: int, rgb: np.ndarray,
          rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    cy, cx = rng.uniform(0.35, 0.65, 2) * size
    r = rng.uniform(0.2, 0.3) * size
    dy, dx = np.abs(yy - cy), np.abs(xx - cx)
    mask = {
        'square': np.maximum(dy, dx) < r,
        'disc': np.hypot(dy, dx) < r,
        'cross': (np.minimum(dy, dx) < r / 3) & (np.maximum(dy, dx) < r),
        'ring': np.abs(np.hypot(dy, dx) - r * 0.75) < r / 4,
    }[shape]
    image = np.full((size, size, 3), 16, dtype=np.uint8)
    image[mask] = rgb
    return image


def write_toy_hierarchy(root: str,
                        num_superclasses: int = 2,
                        subclasses_per_super: int = 2,
                        images_per_class: int = 8,
                        size: int = 16,
                        seed: int = 0) -> List[int]:
    """Writes the image set and returns its sub->super table.

    Args:
        root (str): Output folder.
        num_superclasses (int): At most ``len(SHAPES)``. Defaults to 2.
        subclasses_per_super (int): Hues per shape. Defaults to 2.
        images_per_class (int): Defaults to 8.
        size (int): Image side in pixels. Defaults to 16.
        seed (int): The same seed writes the same files. Defaults to 0.

    Returns:
        list[int]: Superclass id of each subclass, in sorted folder order.
    """
    if not 1 <= num_superclasses <= len(SHAPES):
        raise ValueError(f'num_superclasses must be in [1, {len(SHAPES)}], '
                         f'got {num_superclasses}')
    rng = np.random.default_rng(seed)
    sub2super = []
    for sup, shape in enumerate(SHAPES[:num_superclasses]):
        for k in range(subclasses_per_super):
            hue = k / subclasses_per_super
            rgb = np.array(colorsys.hsv_to_rgb(hue, 0.9, 0.95)) * 255
            folder = osp.join(root, f'{sup:02d}_{shape}_{k:02d}')
            os.makedirs(folder, exist_ok=True)
            for n in range(images_per_class):
                Image.fromarray(_draw(shape, size, rgb, rng)).save(
                    osp.join(folder, f'{n}.png'))
            sub2super.append(sup)
    return sub2super
