"""Encodes a config's training images once with its VAE (latent cache).

Both the image and its mirror are encoded (posterior mean and std), in
shards; an interrupted run resumes where it stopped. Train on the cache with
a LatentDataset config (e.g. configs/finediffusion_inat_latents.py).

Example:
    python tools/cache_latents.py configs/finediffusion_inat.py data/inat2021/latents_256
"""
import argparse

import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import finediffusion  # noqa: F401,I001  (compatibility fixes first)
from finediffusion.datasets.latent_cache import (NonFiniteLatentError,
                                                 cache_latents)
from mmagic.registry import DATASETS, MODELS


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='a config with model.vae and an image '
                        'train_dataloader')
    parser.add_argument('out', help='cache folder')
    parser.add_argument('--shard-size', type=int, default=1024)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--device', default=None,
                        help='default: cuda when available')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
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
            'data_preprocessor', dict(type='TieredDataPreprocessor')))

    dtype = next(vae.parameters()).dtype

    def encode(images: torch.Tensor):
        # In the VAE's dtype (an fp16 VAE takes fp16 images), stored float32.
        posterior = vae.encode(images.to(device, dtype)).latent_dist
        return posterior.mean.float(), posterior.std.float()

    description = dict(vae=str(cfg.model.vae), dataset=str(dataset_cfg))
    try:
        manifest = cache_latents(dataset, encode, args.out, description,
                                 args.shard_size, args.batch_size,
                                 data_preprocessor=data_preprocessor)
    except NonFiniteLatentError as error:
        raise SystemExit(f'error: {error}')
    print(f'{sum(manifest["shards"].values())} images in '
          f'{len(manifest["shards"])} shards at {args.out}; '
          f'{len(manifest["skipped"])} skipped')


if __name__ == '__main__':
    main()
