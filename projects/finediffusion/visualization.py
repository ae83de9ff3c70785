"""Sample grids with class-name rows and column-group headers."""
from typing import Dict, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .taxonomy import Taxonomy


def class_grid(columns: Dict[str, np.ndarray],
               classes: Sequence[int],
               taxonomy: Taxonomy,
               zoom: int = 2,
               gap: int = 6) -> Image.Image:
    """One row per class, one group of columns per source.

    Args:
        columns (dict): Group title to images, (len(classes), k, H, W, 3)
            uint8 RGB: k images of each class, in ``classes`` order.
        classes (Sequence[int]): Subclass ids of the rows; pass subclasses
            of one superclass next to each other.
        taxonomy (Taxonomy): Names of the rows (subclass / superclass).
        zoom (int): Nearest-neighbour upscaling of the images. Defaults to 2.
        gap (int): Pixels between column groups. Defaults to 6.

    Returns:
        PIL.Image.Image: The grid.
    """
    font = ImageFont.load_default()
    labels = [taxonomy.label(c) for c in classes]
    first = next(iter(columns.values()))
    _, per_group, height, width, _ = first.shape
    cell_h, cell_w = height * zoom, width * zoom
    label_w = max(int(font.getlength(text)) for text in labels) + 10
    header_h = 16
    group_w = per_group * cell_w
    grid = Image.new(
        'RGB', (label_w + len(columns) * (group_w + gap) - gap,
                header_h + len(classes) * cell_h), 'white')
    draw = ImageDraw.Draw(grid)
    for g, (title, images) in enumerate(columns.items()):
        left = label_w + g * (group_w + gap)
        draw.text((left + 2, 2), title, fill='black', font=font)
        for row, per_class in enumerate(images):
            for k, image in enumerate(per_class):
                tile = Image.fromarray(image).resize((cell_w, cell_h),
                                                     Image.NEAREST)
                grid.paste(tile, (left + k * cell_w, header_h + row * cell_h))
    for row, text in enumerate(labels):
        draw.text((4, header_h + row * cell_h + cell_h // 2 - 5), text,
                  fill='black', font=font)
    return grid
