"""Where a Runner meets a second taxonomy: the datasets of its loops and the
checkpoints it loads, each compared with the model's (one comparison,
:func:`finediffusion.taxonomy.check_same_taxonomy`)."""
from typing import List, Tuple

from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from ..delta import TAXONOMY_KEY, checkpoint_taxonomy
from ..taxonomy import (Taxonomy, TaxonomyLike, check_same_taxonomy,
                        spec_taxonomy)


def model_taxonomy(runner: Runner) -> Tuple[TaxonomyLike, str]:
    """The model's taxonomy and a description of it for messages.

    The model holds only its sub->super table (``backbone.sub2super``);
    the names come from the config's ``model.backbone.taxonomy`` when that
    is a dataset's taxonomy spec, which must give the same table.

    Raises:
        ValueError: When the config's spec and the model's table differ.
    """
    model = runner.model.module if is_model_wrapper(
        runner.model) else runner.model
    table = model.backbone.sub2super.tolist()
    spec = runner.cfg.get('model', {}).get('backbone', {}).get('taxonomy')
    if spec is None:
        return table, f"the model's taxonomy ({TAXONOMY_KEY})"
    taxonomy, source = spec_taxonomy(spec)
    described = f"the model's taxonomy {source}"
    check_same_taxonomy(taxonomy, table, described,
                        f"the model's weights ({TAXONOMY_KEY})")
    return taxonomy, described


def check_dataset(runner: Runner, dataset, role: str) -> None:
    """Compares a dataset's taxonomy with the model's.

    Datasets without one in their metainfo (e.g. MMagic's own, which know
    no superclasses) have nothing to compare.

    Args:
        runner (Runner): The runner holding the model and its config.
        dataset: A dataset, e.g. a :class:`TieredImageDataset`.
        role (str): Its data loader, e.g. 'test_dataloader'.

    Raises:
        ValueError: At the first subclass that differs, naming it and both
            sources (see :func:`check_same_taxonomy`).
    """
    meta = getattr(dataset, 'metainfo', None) or {}
    if 'taxonomy' not in meta:
        return
    source = getattr(dataset, 'taxonomy_source', None)
    source = source() if callable(source) else type(dataset).__name__
    expected, described = model_taxonomy(runner)
    check_same_taxonomy(expected, Taxonomy.from_dict(meta['taxonomy']),
                        described, f'the {role} dataset {source}')


def loop_datasets(loop) -> List:
    """The datasets of a validation or test loop: MMagic's multi-dataset
    loops hold ``dataloaders``, MMEngine's a ``dataloader``."""
    loaders = getattr(loop, 'dataloaders', None)
    if loaders is None:
        loader = getattr(loop, 'dataloader', None)
        loaders = [] if loader is None else [loader]
    return [loader.dataset for loader in loaders]


def check_loop(runner: Runner, loop, role: str) -> None:
    """Compares every dataset of ``loop`` with the model (see
    :func:`check_dataset`); ``role`` names its data loader config."""
    datasets = loop_datasets(loop)
    for index, dataset in enumerate(datasets):
        which = f'[{index}]' if len(datasets) > 1 else ''
        check_dataset(runner, dataset, f'{role}{which}')


def check_checkpoint(runner: Runner, checkpoint: dict) -> None:
    """Compares the taxonomy a checkpoint was trained on with the model's,
    before its class table is loaded (``load_from``, ``--resume``,
    ``tools/test.py``).

    Raises:
        ValueError: At the first subclass that differs, naming it, both
            sources and the checkpoint.
    """
    saved = checkpoint_taxonomy(checkpoint)
    if saved is None:
        return
    meta = checkpoint.get('meta', {})
    # MMEngine passes no file name to the hook; load_from has it, except
    # when --resume found the latest checkpoint by itself.
    path = getattr(runner, '_load_from', None) or (
        f"of run {meta.get('experiment_name', '?')}, iteration "
        f"{meta.get('iter', '?')}")
    expected, described = model_taxonomy(runner)
    check_same_taxonomy(expected, saved, described, f'the checkpoint {path}')
