"""Encodes a config's training images once with its VAE (latent cache).

Both the image and its mirror are encoded (posterior mean and std), in
shards; an interrupted run resumes where it stopped. Train on the cache with
a LatentDataset config (e.g. configs/finediffusion_inat_latents.py).

Images are loaded by data-loader workers (--workers, default the config's
train_dataloader.num_workers). On CUDA the VAE runs under bf16 autocast
(--precision float32 turns it off), compiled (--no-compile turns it off;
every batch is padded to the full size, so one graph serves them all),
contiguous (--channels-last measured slower on an H200:
docs/performance.md), from pinned memory; on the CPU it runs in float32,
eager. Mean and std are stored in float16 by default
(--dtype).

Example:
    python tools/cache_latents.py configs/finediffusion_inat.py data/inat2021/latents_256
"""
import argparse
import os.path as osp
import time
from typing import Callable, List, Optional, Tuple

import torch
from mmengine.registry import DefaultScope
from torch import nn

import finediffusion  # noqa: F401,I001  (compatibility fixes first)
from finediffusion.cli import non_negative_int, positive_int
from finediffusion.config import load_config
from finediffusion.datasets.latent_cache import (DTYPES, MANIFEST,
                                                 NonFiniteLatentError,
                                                 cache_latents, read_manifest)
from finediffusion.models.finediffusion import encode_posterior
from mmagic.registry import DATASETS, MODELS


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='a config with model.vae and an image '
                        'train_dataloader')
    parser.add_argument('out', help='cache folder')
    parser.add_argument('--shard-size', type=positive_int, default=1024,
                        help='images per shard (default: 1024)')
    parser.add_argument('--batch-size', type=positive_int, default=32)
    parser.add_argument('--device', default=None,
                        help='default: cuda when available')
    parser.add_argument('--dtype', choices=sorted(DTYPES), default='float16',
                        help='storage of mean and std (default: float16)')
    parser.add_argument('--workers', type=non_negative_int, default=None,
                        help="image-loading workers (default: the config's "
                        'train_dataloader.num_workers)')
    parser.add_argument('--precision', choices=('bfloat16', 'float32'),
                        default='bfloat16',
                        help='bfloat16: autocast on CUDA for a float32 VAE '
                        '(default); the CPU always encodes in float32')
    parser.add_argument('--compile', default=None,
                        action=argparse.BooleanOptionalAction,
                        help='torch.compile the VAE encoder (default: on '
                        'CUDA)')
    parser.add_argument('--channels-last', default=False,
                        action=argparse.BooleanOptionalAction,
                        help='channels-last VAE and images (default: off)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    try:
        cfg = load_config(args.config)
    except ValueError as error:
        raise SystemExit(f'error: {error}')
    device = torch.device(args.device or (
        'cuda' if torch.cuda.is_available() else 'cpu'))
    cuda = device.type == 'cuda'
    workers = (args.workers if args.workers is not None else
               cfg.train_dataloader.get('num_workers', 0))
    dataset_cfg = cfg.train_dataloader.dataset.copy()
    # Both flips are encoded: the random flip moves to training time.
    dataset_cfg.pipeline = [
        t for t in dataset_cfg.pipeline if t['type'] != 'Flip'
    ]
    with DefaultScope.overwrite_default_scope('mmagic'):
        dataset = DATASETS.build(dataset_cfg)
        vae = MODELS.build(cfg.model.vae).to(device).eval()
        # The images as the model takes them when training on images.
        data_preprocessor = MODELS.build(cfg.model.get(
            'data_preprocessor',
            dict(type='DiTDataPreprocessor'))).to(device)
    vae_dtype = next(vae.parameters()).dtype
    # A VAE built in another dtype (model.vae.dtype) runs in it.
    autocast = (cuda and args.precision == 'bfloat16'
                and vae_dtype == torch.float32)
    precision = 'bfloat16' if autocast else str(vae_dtype).split('.')[-1]
    compile = cuda if args.compile is None else args.compile
    encode = make_encoder(vae, device, autocast, args.channels_last,
                          {} if compile else None, 2 * args.batch_size)

    description = dict(vae=str(cfg.model.vae), dataset=str(dataset_cfg),
                       precision=precision)
    finished = (sum(read_manifest(args.out)['shards'].values())
                if osp.isfile(osp.join(args.out, MANIFEST)) else 0)
    # When the first batch ends, and its images: it carries the
    # compilation, so the steady rate is measured after it.
    first: List[Tuple[float, int]] = []

    def timed_encode(images: torch.Tensor) -> Tuple:
        posterior = encode(images)
        if not first:
            if cuda:
                torch.cuda.synchronize(device)
            first.append((time.perf_counter(), len(images) // 2))
        return posterior

    began = time.perf_counter()
    try:
        manifest = cache_latents(dataset, timed_encode, args.out, description,
                                 args.shard_size, args.batch_size,
                                 data_preprocessor=data_preprocessor,
                                 dtype=args.dtype, workers=workers,
                                 pin_memory=cuda)
    except NonFiniteLatentError as error:
        raise SystemExit(f'error: {error}')
    ended = time.perf_counter()
    total = sum(manifest['shards'].values())
    encoded = total - finished
    print(f'{total} images in {len(manifest["shards"])} shards at {args.out}; '
          f'{len(manifest["skipped"])} skipped; {encoded} encoded by '
          f'this run in {ended - began:.1f} s after start-up, '
          f'{encoded / (ended - began):.1f} img/s')
    if first and encoded > first[0][1] and ended > first[0][0]:
        (first_end, first_images), = first
        print(f'after the first batch ({first_end - began:.1f} s, '
              f'compilation included): '
              f'{(encoded - first_images) / (ended - first_end):.1f} img/s')


def make_encoder(vae: nn.Module, device: torch.device, autocast: bool,
                 channels_last: bool, compile: Optional[dict],
                 batch: int) -> Callable[[torch.Tensor], Tuple]:
    """The cache writer's ``encode``: the model's images (RGB in [-1, 1],
    (N, 3, H, W), N <= ``batch``) to the posterior (mean, std), float32,
    (N, C, H / 8, W / 8), as the model encodes (``encode_posterior``).

    Args:
        vae (nn.Module): The config's VAE, on ``device``.
        device (torch.device): Where it encodes.
        autocast (bool): Under bf16 autocast.
        channels_last (bool): In channels-last layout.
        compile (dict, optional): Keyword arguments of ``torch.compile``
            for the encoder (compiled in place, static shapes), or None for
            eager. Shorter batches (a shard's last, skipped images) are
            padded to ``batch`` for the compiled encoder: one graph, no
            recompilation.
        batch (int): The largest batch (both flips).
    """
    vae_dtype = next(vae.parameters()).dtype
    if channels_last:
        # nn.Module's own to(): MMagic's DiffusersWrapper.to takes no
        # memory_format.
        nn.Module.to(vae, memory_format=torch.channels_last)
    if compile is not None:
        vae.encoder.compile(**{'dynamic': False, **compile})

    def encode(images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        n = len(images)
        images = images.to(device, vae_dtype)
        if compile is not None and n < batch:
            # Each image is encoded on its own (GroupNorm is per image).
            images = torch.cat(
                [images, images.new_zeros(batch - n, *images.shape[1:])])
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        # The model's encoding: the posterior formed in float32.
        with torch.autocast(device.type, torch.bfloat16, enabled=autocast):
            mean, std = encode_posterior(vae, images)
        return mean[:n], std[:n]

    return encode


if __name__ == '__main__':
    main()
