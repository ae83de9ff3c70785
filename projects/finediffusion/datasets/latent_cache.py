"""A dataset encoded once by the VAE: sharded latent statistics on disk.

Layout of a cache folder: ``shard_00000.safetensors``, ... each holding, for
up to ``shard_size`` images, the posterior ``mean`` and ``std`` of the VAE
for the image and its mirror image (shape (N, 2, C, h, w); flip 0 is the
original), in the manifest's ``dtype`` (float32, float16 or bfloat16;
float32 when it names none), ``labels`` and dataset ``indices``; and
``manifest.json`` (written after each finished shard, atomically) with the
finished shards, the taxonomy and what was encoded. Training samples
mean + std * noise, as encoding on the fly does, so the cache changes no
statistics.
"""
import json
import os
import os.path as osp
from typing import Callable, Dict, Iterator, List, Optional

import numpy as np
import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..engine.collate import stack_collate

MANIFEST = 'manifest.json'
FORMAT = 'finediffusion-latents/1'
# Storage dtypes of a cache, by the name the manifest records.
DTYPES = dict(float32=torch.float32, float16=torch.float16,
              bfloat16=torch.bfloat16)
# The dtype of the shards of a manifest that names none.
UNNAMED_DTYPE = 'float32'


def _partial(path: str) -> str:
    """Where ``path`` is written before it is renamed into place: per
    process, so that two writers of one cache never rename each other's
    file."""
    return f'{path}.{os.getpid()}.partial'


def _write_json(path: str, data: dict) -> None:
    partial = _partial(path)
    with open(partial, 'w') as f:
        json.dump(data, f, indent=1)
    os.replace(partial, path)


def read_manifest(cache_dir: str) -> dict:
    path = osp.join(cache_dir, MANIFEST)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path} not found: not a latent cache '
                                '(tools/cache_latents.py writes one)')
    with open(path) as f:
        return json.load(f)


class _Prepared(Dataset):
    """``(index, dataset.prepare_data(index))``: an image that fails to load
    gives None, to be counted, where ``BaseDataset.__getitem__`` would load
    another in its place."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple:
        return index, self.dataset.prepare_data(index)


def _collate(items: List[tuple]) -> tuple:
    """(indices loaded, indices skipped, the loaded samples stacked by
    :func:`stack_collate`, or None when none loaded)."""
    loaded = [(index, item) for index, item in items if item is not None]
    skipped = [index for index, item in items if item is None]
    batch = stack_collate([item for _, item in loaded]) if loaded else None
    return [index for index, _ in loaded], skipped, batch


@torch.no_grad()
def cache_latents(dataset, encode: Callable[[torch.Tensor], tuple],
                  cache_dir: str, description: dict, shard_size: int = 1024,
                  batch_size: int = 32, progress: bool = True,
                  data_preprocessor: Optional[Callable] = None,
                  dtype: str = 'float32', workers: int = 0,
                  pin_memory: bool = False) -> dict:
    """Encodes ``dataset`` into ``cache_dir``, resuming a previous run.

    Finished shards (listed in the manifest) are kept; a shard whose writing
    was interrupted is encoded again. Images that fail to load are left out
    and counted in the manifest. The images are loaded in batches of
    ``batch_size`` within each shard, in index order: the files do not
    depend on ``workers``.

    Args:
        dataset: A :class:`TieredImageDataset` whose pipeline yields
            ``inputs`` (uint8, CHW, in its loader's order), without flips.
        encode (callable): Maps the model's images (RGB in [-1, 1],
            (N, 3, H, W), on the data preprocessor's device) to the VAE
            posterior (mean, std), each (N, C, h, w).
        cache_dir (str): Output folder.
        description (dict): What is encoded (VAE, size...): a resumed run
            must match it.
        shard_size (int): Images per shard file.
        batch_size (int): Images per VAE call (x2 with the mirror images).
        progress (bool): Show a progress bar.
        data_preprocessor (callable, optional): The model's (in training
            mode), as when training on images. Defaults to a
            :class:`TieredDataPreprocessor` (RGB in [-1, 1]) on the CPU.
        dtype (str): How mean and std are stored: 'float32', 'float16' or
            'bfloat16' (a resumed run must match it).
        workers (int): Data-loader workers; 0 loads in this process.
        pin_memory (bool): Loads into pinned memory (for a CUDA encoder).

    Returns:
        dict: The manifest.

    Raises:
        ValueError: For an unknown ``dtype``, or a folder holding a cache of
            another description, dataset, shard size or dtype.
        NonFiniteLatentError: Naming the images (path, dataset index) whose
            posterior holds NaN or inf, or values beyond the range of
            ``dtype``; the finished shards stay and a rerun resumes.
    """
    manifest = _start_manifest(dataset, cache_dir, description, shard_size,
                               dtype)
    if data_preprocessor is None:
        # Imported here: the models package imports the datasets package.
        from ..models.data_preprocessor import TieredDataPreprocessor
        data_preprocessor = TieredDataPreprocessor()
    todo = _unfinished_shards(manifest, shard_size, batch_size)
    loaded = _load_in_order(dataset, todo, workers, pin_memory)
    _encode_shards(loaded, todo, manifest, cache_dir, progress,
                   dataset=dataset, encode=encode,
                   data_preprocessor=data_preprocessor, dtype=DTYPES[dtype])
    manifest['complete'] = True
    _write_json(osp.join(cache_dir, MANIFEST), manifest)
    return manifest


def _start_manifest(dataset, cache_dir: str, description: dict,
                    shard_size: int, dtype: str) -> dict:
    """Creates ``cache_dir`` and returns the manifest of a new cache, or
    that of the cache already there (with its finished shards) when it was
    written for the same description, dataset size, shard size, dtype and
    taxonomy.

    Raises:
        ValueError: For an unknown ``dtype`` (before anything is created),
            or a cache written with any of these different.
    """
    if dtype not in DTYPES:
        raise ValueError(f'cache_latents: dtype must be one of '
                         f'{sorted(DTYPES)}, got {dtype!r}')
    os.makedirs(cache_dir, exist_ok=True)
    path = osp.join(cache_dir, MANIFEST)
    manifest = dict(format=FORMAT, description=description,
                    num_images=len(dataset), shard_size=shard_size,
                    dtype=dtype, taxonomy=dataset.metainfo['taxonomy'],
                    shards={}, skipped=[])
    if not osp.isfile(path):
        return manifest
    previous = read_manifest(cache_dir)
    previous.setdefault('dtype', UNNAMED_DTYPE)
    for key in ('description', 'num_images', 'shard_size', 'dtype',
                'taxonomy'):
        if previous[key] != manifest[key]:
            raise ValueError(f'{path} was written for another {key}: '
                             'use a new folder or remove it')
    return previous


def _unfinished_shards(manifest: dict, shard_size: int,
                       batch_size: int) -> Dict[str, List[List[int]]]:
    """The file name of each shard that ``manifest`` does not list as
    finished, in order, with its dataset indices in batches of
    ``batch_size`` (the last one shorter)."""
    num_images = manifest['num_images']
    todo = {}
    for first in range(0, num_images, shard_size):
        name = f'shard_{first // shard_size:05d}.safetensors'
        if name in manifest['shards']:
            continue
        last = min(first + shard_size, num_images)
        todo[name] = [list(range(start, min(start + batch_size, last)))
                      for start in range(first, last, batch_size)]
    return todo


def _load_in_order(dataset, todo: Dict[str, List[List[int]]], workers: int,
                   pin_memory: bool) -> Iterator[tuple]:
    """The batches of ``todo``, in order, as :func:`_collate` gives them,
    loaded by ``workers`` data-loader workers (0: in this process)."""
    loader = DataLoader(
        _Prepared(dataset),
        batch_sampler=[batch for batches in todo.values()
                       for batch in batches],
        num_workers=workers, collate_fn=_collate, pin_memory=pin_memory)
    return iter(loader)


def _encode_shards(loaded: Iterator[tuple], todo: Dict[str, List[List[int]]],
                   manifest: dict, cache_dir: str, progress: bool,
                   **encoder) -> None:
    """Encodes and writes the shards of ``todo`` as ``loaded`` yields their
    batches, recording each finished shard in the manifest on disk.

    Args:
        loaded (iterator): :func:`_collate`'s tuples, batch after batch.
        todo (dict): The shards to write (:func:`_unfinished_shards`).
        manifest (dict): The cache's manifest, updated.
        cache_dir (str): The cache folder.
        progress (bool): Show a progress bar.
        **encoder: ``dataset``, ``encode``, ``data_preprocessor`` and
            ``dtype``, as :func:`_encode_shard` takes them.
    """
    num_images = manifest['num_images']
    bar = tqdm(total=num_images, disable=not progress, unit='img',
               desc='encoding')
    bar.update(num_images - sum(
        len(indices) for batches in todo.values() for indices in batches))
    for name, batches in todo.items():
        tensors = _encode_shard(loaded, batches, manifest, bar,
                                shard_name=name, **encoder)
        _save_shard(tensors, osp.join(cache_dir, name))
        manifest['shards'][name] = len(tensors['indices'])
        _write_json(osp.join(cache_dir, MANIFEST), manifest)
    bar.close()


def _encode_shard(loaded: Iterator[tuple], batches: List[List[int]],
                  manifest: dict, bar: tqdm, *, dataset,
                  encode: Callable[[torch.Tensor], tuple],
                  data_preprocessor: Callable, dtype: torch.dtype,
                  shard_name: str) -> Dict[str, torch.Tensor]:
    """Encodes the batches of one shard as ``loaded`` yields them
    (:func:`_collate`'s tuples), adding the images that failed to load to
    ``manifest['skipped']``.

    Returns:
        dict: The shard's tensors: ``mean`` and ``std`` (N, 2, C, h, w) in
        ``dtype``, ``labels`` and ``indices`` (N, ) int64.

    Raises:
        NonFiniteLatentError: Before anything of the shard is written.
    """
    means, stds, labels, kept = [], [], [], []
    for indices in batches:
        encoded, skipped, batch = next(loaded)
        manifest['skipped'].extend(skipped)
        bar.update(len(indices))
        if batch is None:
            continue
        labels.extend(batch['data_samples'].gt_label.label.reshape(
            -1).tolist())
        x = data_preprocessor(batch, True)['inputs']
        mean, std = encode(torch.cat([x, x.flip(-1)]))
        # Checked as stored: float16 overflows beyond 65504.
        mean, std = mean.to(dtype), std.to(dtype)
        _refuse_nonfinite(dataset, encoded, mean, std, shard_name,
                          len(manifest['shards']))
        kept.extend(encoded)
        means.append(_by_flip(mean, len(encoded)))
        stds.append(_by_flip(std, len(encoded)))
    return dict(
        mean=torch.cat(means).contiguous(),
        std=torch.cat(stds).contiguous(),
        labels=torch.tensor(labels, dtype=torch.int64),
        indices=torch.tensor(kept, dtype=torch.int64))


def _by_flip(encoded: torch.Tensor, n: int) -> torch.Tensor:
    """Rows i and i + n of ``encoded`` (an image and its mirror) as
    ``[i, 0]`` and ``[i, 1]``, on the CPU."""
    return torch.stack([encoded[:n], encoded[n:]], dim=1).cpu()


def _save_shard(tensors: Dict[str, torch.Tensor], path: str) -> None:
    """Writes a shard file, renamed into place once complete."""
    partial = _partial(path)
    save_file(tensors, partial)
    os.replace(partial, path)


class NonFiniteLatentError(ValueError):
    """The VAE encoded an image to NaN or inf."""


def _refuse_nonfinite(dataset, indices: List[int], mean: torch.Tensor,
                      std: torch.Tensor, shard: str, finished: int) -> None:
    """Raises :class:`NonFiniteLatentError` naming the images of
    ``indices`` whose posterior (either flip, rows i and i + n of ``mean``
    and ``std``) is not finite."""
    n = len(indices)
    finite = (torch.isfinite(mean).flatten(1).all(1)
              & torch.isfinite(std).flatten(1).all(1)).cpu()
    finite = finite[:n] & finite[n:]
    if bool(finite.all()):
        return
    bad = [
        f"{dataset.get_data_info(index).get('gt_path')} (dataset index "
        f'{index})' for index, ok in zip(indices, finite.tolist()) if not ok
    ]
    raise NonFiniteLatentError(
        f'the VAE encoded {len(bad)} image(s) to NaN or inf: '
        f'{"; ".join(bad[:20])}. Nothing of {shard} was written; the '
        f'{finished} finished shard(s) are kept and a rerun resumes. Fix or '
        'remove the image(s), or encode in float32 (an fp16 VAE overflows '
        'on some images).')


def rows_of(cache_dir: str, manifest: Optional[dict] = None):
    """(shard file, row, label) of every cached image."""
    from safetensors import safe_open
    manifest = manifest or read_manifest(cache_dir)
    if not manifest.get('complete'):
        raise ValueError(f'{cache_dir} is an unfinished latent cache: run '
                         'tools/cache_latents.py again to complete it')
    for name in sorted(manifest['shards']):
        with safe_open(osp.join(cache_dir, name), framework='pt') as f:
            labels = f.get_tensor('labels').tolist()
        for row, label in enumerate(labels):
            yield name, row, label


def as_label(label: int) -> np.ndarray:
    return np.array([label], dtype=np.int64)
