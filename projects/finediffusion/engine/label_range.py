"""Checking, once at the start of a run, that a dataset's subclass labels
are rows of the model's class table."""
from typing import Optional, Tuple

import numpy as np

# How many offending samples an error message lists.
SHOWN = 5
TAXONOMY = "metainfo['taxonomy']"


def declared_classes(dataset) -> Optional[Tuple[int, str]]:
    """The class count a dataset declares in its metainfo, and where.

    Returns:
        tuple or None: (count, source): the taxonomy's subclasses
        (``metainfo['taxonomy']``, this project's datasets) or MMEngine's
        ``metainfo['classes']`` (MMagic's datasets); None if neither.
    """
    metainfo = getattr(dataset, 'metainfo', None) or {}
    if metainfo.get('taxonomy'):
        return len(metainfo['taxonomy']['names']), TAXONOMY
    if metainfo.get('classes'):
        return len(metainfo['classes']), "metainfo['classes']"
    return None


def check_label_range(dataset, num_classes: int, role: str) -> None:
    """Refuses a dataset with more classes, or labels, than the model has
    subclass rows.

    The declared class count is compared first. Datasets with a taxonomy
    (this project's) build every label from it, so that is enough; for
    others (MMagic's, whose labels come from folders or annotation files)
    every sample's ``gt_label`` is then read from the data list (no image
    is loaded; about 20 us a sample). A label beyond the table thus fails
    here rather than mid-step (an ``IndexError``, or a device-side assert
    on CUDA).

    Args:
        dataset: An MMEngine dataset whose ``get_data_info(i)['gt_label']``
            is the subclass id of sample i.
        num_classes (int): Subclass rows of the model's class table.
        role (str): What the data is for, in messages ('training', 'test').

    Raises:
        ValueError: Naming both counts, or the offending labels with their
            dataset index and path.
    """
    declared = declared_classes(dataset)
    if declared is not None and declared[0] > num_classes:
        raise ValueError(
            f'the {role} data has {declared[0]} classes ({declared[1]}) but '
            f"the model's class table has {num_classes} subclass rows "
            '(model.backbone.num_classes / sub2super): build the model from '
            "the data's taxonomy, or give it the data's class count")
    if declared is not None and declared[1] == TAXONOMY:
        return
    bad = []
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        if 'gt_label' not in info:
            continue
        label = np.asarray(info['gt_label']).reshape(-1)[0]
        if not (np.issubdtype(label.dtype, np.integer)
                and 0 <= int(label) < num_classes):
            bad.append(f'label {label.item()!r} (dataset index {index}'
                       + (f", {info['gt_path']}" if 'gt_path' in info else '')
                       + ')')
    if bad:
        raise ValueError(
            f'{len(bad)} {role} samples have labels outside the model\'s '
            f'{num_classes} subclass rows (0 to {num_classes - 1}): '
            f'{"; ".join(bad[:SHOWN])}{"; ..." if len(bad) > SHOWN else ""}')
