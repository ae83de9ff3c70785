"""Sample grids with class-name rows and column-group headers."""
from typing import Dict, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from .taxonomy import Taxonomy

HEADER_HEIGHT = 16

# A grid row: a subclass id, or (subclass id, rank) for an ancestor's row.
Target = Union[int, Tuple[int, str]]


def to_uint8(images: Tensor) -> Tensor:
    """Generated images as 8-bit levels.

    Args:
        images (Tensor): (N, 3, H, W) RGB in [-1, 1] (values outside are
            clipped).

    Returns:
        Tensor: (N, 3, H, W) uint8, rounded to the nearest level.
    """
    return ((images.clamp(-1, 1) + 1) * 127.5).round().byte()


def first_per_class(images: Tensor, labels: Tensor, classes: Sequence[int],
                    k: int) -> np.ndarray:
    """The first ``k`` images of each class, as :func:`class_grid` takes
    a column group.

    Args:
        images (Tensor): (N, 3, H, W) uint8 RGB.
        labels (Tensor): (N, ) class ids.
        classes (Sequence[int]): The classes, in row order.
        k (int): Images per class.

    Returns:
        np.ndarray: (len(classes), k, H, W, 3) uint8.

    Raises:
        RuntimeError: When a class has fewer than ``k`` images.
    """
    pick = torch.cat(
        [(labels == c).nonzero().flatten()[:k] for c in classes])
    return images[pick].reshape(len(classes), k, *images.shape[1:]).permute(
        0, 1, 3, 4, 2).numpy()


def row_label(taxonomy: Taxonomy, target: Target) -> str:
    """The label of a grid row: a subclass id (its name / superclass) or
    a (subclass id, rank) pair (the subclass's ancestor's row at that rank,
    e.g. 'Nymphalidae (family row)'; rank 'sub' is the subclass)."""
    sub, rank = target if isinstance(target, tuple) else (target, 'sub')
    return taxonomy.label(sub) if rank == 'sub' else taxonomy.rank_label(
        rank, sub)


def class_grid(columns: Dict[str, np.ndarray],
               classes: Sequence[Target],
               taxonomy: Taxonomy,
               zoom: int = 2,
               gap: int = 6) -> Image.Image:
    """One row per class, one group of columns per source.

    Args:
        columns (dict): Group title to images, (len(classes), k, H, W, 3)
            uint8 RGB: k images of each class, in ``classes`` order. With
            only empty titles the grid has no header line.
        classes (Sequence): The rows: subclass ids, or (subclass id, rank)
            pairs for rows drawn at an ancestor's rank (see
            :func:`row_label`); pass subclasses of one superclass next to
            each other.
        taxonomy (Taxonomy): Names of the rows.
        zoom (int): Nearest-neighbour upscaling of the images. Defaults to 2.
        gap (int): Pixels between column groups. Defaults to 6.

    Returns:
        PIL.Image.Image: The grid, ``HEADER_HEIGHT`` (or 0) + len(classes) *
        H * zoom pixels high.
    """
    font = ImageFont.load_default()
    labels = [row_label(taxonomy, c) for c in classes]
    first = next(iter(columns.values()))
    _, per_group, height, width, _ = first.shape
    cell_h, cell_w = height * zoom, width * zoom
    label_w = max(int(font.getlength(text)) for text in labels) + 10
    header_h = HEADER_HEIGHT if any(columns) else 0
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


def sample_grid(groups: Dict[str, Tuple[Tensor, Tensor]],
                taxonomy: Taxonomy,
                superclasses: int = 2,
                per_class: int = 4,
                **kwargs) -> Image.Image:
    """A :func:`class_grid` of the subclasses of the first superclasses,
    the first ``per_class`` images of each in every group.

    Args:
        groups (dict): Group title to (images, labels): (N, 3, H, W) uint8
            RGB and their (N, ) subclass ids.
        taxonomy (Taxonomy): The subclasses and their names.
        superclasses (int): Rows for the subclasses of superclasses 0 to
            ``superclasses - 1``. Defaults to 2.
        per_class (int): Images of each class in a group. Defaults to 4.
        **kwargs: ``zoom`` and ``gap`` of :func:`class_grid`.

    Returns:
        PIL.Image.Image: The grid.

    Raises:
        RuntimeError: When a group has fewer than ``per_class`` images of
            a class.
    """
    rows = [c for c, s in enumerate(taxonomy.sub2super) if s < superclasses]
    columns = {
        title: first_per_class(images, labels, rows, per_class)
        for title, (images, labels) in groups.items()
    }
    return class_grid(columns, rows, taxonomy, **kwargs)


def rows_of_classes(images: Tensor, num_classes: int) -> np.ndarray:
    """Images as one row per class, for :func:`class_grid`.

    Args:
        images (Tensor): (num_classes * k, 3, H, W) uint8 RGB, ``k``
            consecutive images of each class.
        num_classes (int): The number of classes (rows).

    Returns:
        np.ndarray: (num_classes, k, H, W, 3) uint8 RGB.
    """
    per_class = len(images) // num_classes
    return images.permute(0, 2, 3, 1).reshape(num_classes, per_class,
                                              *images.shape[2:], 3).numpy()


def grid_of_rows(rows: np.ndarray, classes: Sequence[Target],
                 taxonomy: Taxonomy) -> Image.Image:
    """The labelled :func:`class_grid` of :func:`rows_of_classes`' rows,
    small images enlarged to 64 pixels or more."""
    return class_grid({'': rows}, classes, taxonomy,
                      zoom=max(1, 64 // rows.shape[2]))
