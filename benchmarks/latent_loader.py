"""Speed of the shipped latent-cache data loading (DiT-XL/2-256 shapes).

Writes a synthetic cache with the real writer (``cache_latents``): posterior
mean and std of shape (N, 2, 4, 32, 32) in ``--dtype``, shards of 1024, a
taxonomy of 10,000 subclasses in 11 superclasses (reused when the folder
holds a finished one). Then builds ``configs/finediffusion_inat_latents.py``'s
train_dataloader as the Runner does, with the cache, batch size and workers
given, and its model's data preprocessor, and prints one JSON line:

- ``samples_per_s``: the loader's throughput, the main process taking
  batches as fast as it can (workers and the main process share the CPU
  cores: with fewer cores than workers + 1 this is not a per-worker
  figure);
- ``samples_per_s_per_worker``: ``samples_per_s`` over the workers (with
  ``--workers 0``, the main process alone);
- ``main_ms_per_batch``: what a training step waits for in the main
  process, the loader paced as training at the target speed (each batch
  followed by a model step of ``--step-ms``, by default 1 ms per sample:
  1,000 img/s); the median of taking a batch from the loader
  (``fetch_ms``) plus the data preprocessor (``preprocess_ms``,
  synchronised on a GPU).

Example:
    python benchmarks/latent_loader.py --workers 2 --batch-size 256
"""
import argparse
import json
import os
import os.path as osp
import statistics
import time

import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

import finediffusion  # noqa: F401,I001  (compatibility fixes first)
from finediffusion.datasets.latent_cache import DTYPES, cache_latents
from finediffusion.taxonomy import Taxonomy
from mmagic.registry import MODELS
from mmagic.structures import DataSample

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, 'configs', 'finediffusion_inat_latents.py')


class _LabelsOnly:
    """A stand-in image dataset for the cache writer: a tiny image and a
    label per index, and a 10,000-class taxonomy."""

    def __init__(self, num_images: int, num_classes: int) -> None:
        self.num_images, self.num_classes = num_images, num_classes
        taxonomy = Taxonomy(
            names=[f'Genus{i // 7} species{i}' for i in range(num_classes)],
            sub2super=[i % 11 for i in range(num_classes)],
            super_names=[f'Group{s}' for s in range(11)],
            common_names=[f'thing {i}' for i in range(num_classes)])
        self.metainfo = dict(taxonomy=taxonomy.to_dict())

    def __len__(self) -> int:
        return self.num_images

    def prepare_data(self, index: int) -> dict:
        sample = DataSample(metainfo=dict(gt_channel_order='rgb'))
        sample.set_gt_label(torch.tensor([index % self.num_classes]))
        return dict(inputs=torch.zeros(3, 8, 8, dtype=torch.uint8),
                    data_samples=sample)


def write_cache(cache_dir: str, num_images: int, num_classes: int,
                shard_size: int, dtype: str) -> None:
    """A finished cache of random posteriors in DiT-XL/2-256 shapes, stored
    in ``dtype``."""
    generator = torch.Generator().manual_seed(0)

    def encode(images: torch.Tensor):
        shape = (len(images), 4, 32, 32)
        mean = torch.randn(shape, generator=generator) * 5
        # Positive and small, as the SD-VAE's posterior std.
        std = torch.rand(shape, generator=generator) * 0.05 + 1e-3
        return mean, std

    cache_latents(_LabelsOnly(num_images, num_classes), encode, cache_dir,
                  dict(vae='synthetic'), shard_size=shard_size,
                  batch_size=256, progress=False, dtype=dtype)


def measure(args: argparse.Namespace) -> dict:
    cfg = Config.fromfile(CONFIG)
    loader_cfg = cfg.train_dataloader
    loader_cfg.dataset.cache_dir = args.cache
    loader_cfg.batch_size = args.batch_size
    loader_cfg.num_workers = args.workers
    loader_cfg.persistent_workers = args.workers > 0
    device = torch.device(args.device)
    with DefaultScope.overwrite_default_scope('mmagic'):
        loader = Runner.build_dataloader(loader_cfg, seed=0)
        preprocessor = MODELS.build(cfg.model.data_preprocessor).to(device)

    def sync() -> None:
        if device.type == 'cuda':
            torch.cuda.synchronize(device)

    batches = iter(loader)

    def step() -> tuple:
        start = time.perf_counter()
        batch = next(batches)
        fetched = time.perf_counter()
        preprocessor(batch, training=True)
        sync()
        return fetched - start, time.perf_counter() - fetched

    for _ in range(2):  # worker start-up, first file opens
        step()
    start = time.perf_counter()
    for _ in range(args.batches):
        step()
    rate = args.batches * args.batch_size / (time.perf_counter() - start)
    workers = max(args.workers, 1)
    # Paced as training at the target speed: each batch is followed by a
    # step of --step-ms, during which the workers work ahead.
    times = []
    for _ in range(args.batches):
        times.append(step())
        time.sleep(args.step_ms / 1e3)
    fetch = statistics.median(t[0] for t in times) * 1e3
    prep = statistics.median(t[1] for t in times) * 1e3
    main = statistics.median(sum(t) for t in times) * 1e3
    return dict(
        workers=args.workers, batch_size=args.batch_size,
        images=args.images, dtype=args.dtype, device=device.type,
        cpu_cores=os.cpu_count(), samples_per_s=round(rate, 1),
        samples_per_s_per_worker=round(rate / workers, 1),
        step_ms=args.step_ms, main_ms_per_batch=round(main, 2),
        fetch_ms=round(fetch, 2), preprocess_ms=round(prep, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cache', default=None,
                        help='cache folder, written when unfinished '
                        '(default: /tmp/latent_loader_<dtype>)')
    parser.add_argument('--dtype', choices=sorted(DTYPES), default='float16',
                        help="the cache's storage (default: float16, as "
                        'tools/cache_latents.py)')
    parser.add_argument('--images', type=int, default=20000)
    parser.add_argument('--classes', type=int, default=10000)
    parser.add_argument('--shard-size', type=int, default=1024)
    parser.add_argument('--workers', type=int, default=8)
    parser.add_argument('--batch-size', type=int, default=256)
    parser.add_argument('--batches', type=int, default=20,
                        help='timed batches of the throughput phase')
    parser.add_argument('--step-ms', type=float, default=None,
                        help='the model step that paces the loader in the '
                        'main-process measurement (default: 1 ms a sample)')
    parser.add_argument('--device', default='cuda'
                        if torch.cuda.is_available() else 'cpu')
    args = parser.parse_args()
    args.cache = args.cache or f'/tmp/latent_loader_{args.dtype}'
    if args.step_ms is None:
        args.step_ms = float(args.batch_size)
    manifest = osp.join(args.cache, 'manifest.json')
    finished = False
    if osp.isfile(manifest):
        with open(manifest) as f:
            finished = json.load(f).get('complete', False)
    if not finished:
        write_cache(args.cache, args.images, args.classes, args.shard_size,
                    args.dtype)
    print(json.dumps(measure(args)), flush=True)


if __name__ == '__main__':
    main()
