"""Stand-ins for what cannot be downloaded here, in the real formats: iNat
2021 annotation files with random JPEGs, DiT weights in the official layout,
a diffusers AutoencoderKL folder and a TorchScript Inception.

Benchmarks and tests run the users' configs on them; the loading code they
exercise is the one that reads the real files.
"""
import json
import os
import os.path as osp
from typing import Optional

import numpy as np
import torch

# iNat 2021 mini's shape: 10,000 species in 11 supercategories.
INAT_SPECIES = 10000
INAT_SUPERCATEGORIES = 11


def write_inat(root: str, num_images: int, num_val: int = 256,
               size: tuple = (300, 400), seed: int = 0) -> None:
    """``train_mini.json`` and ``val.json`` in the iNat 2021 format under
    ``root``, naming random JPEGs of ``size`` (H, W) in the release's
    folder layout, each of a random species."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    categories = [
        dict(id=i, name=f'Genus{i // 7} species{i}', common_name=f'thing {i}',
             supercategory=f'Group{i % INAT_SUPERCATEGORIES}',
             image_dir_name=f'{i:05d}_g{i}') for i in range(INAT_SPECIES)
    ]
    for split, count in (('train_mini', num_images), ('val', num_val)):
        images, annotations = [], []
        for k in range(count):
            cat = int(rng.integers(INAT_SPECIES))
            name = f'{split}/{cat:05d}_g{cat}/{k}.jpg'
            os.makedirs(osp.join(root, osp.dirname(name)), exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (*size, 3),
                                         dtype=np.uint8)).save(
                                             osp.join(root, name))
            images.append(dict(id=k, file_name=name, latitude=float('nan')))
            annotations.append(dict(id=k, image_id=k, category_id=cat))
        with open(osp.join(root, f'{split}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=annotations,
                           categories=categories), f)


def write_official_dit(path: str, backbone: dict,
                       device: Optional[str] = None) -> None:
    """Random weights of the ``TieredDiT`` config ``backbone`` in the
    official DiT layout: a 1,001-row class table (the release's 1,000
    ImageNet classes and null row), plain LayerNorms, no taxonomy."""
    from .models.tiered_dit import TAXONOMY_BUFFER, TieredDiT
    arch = {k: backbone[k] for k in ('arch', 'patch_size', 'input_size',
                                     'in_channels', 'learn_sigma')
            if k in backbone}
    with torch.device(device or 'cpu'):
        dit = TieredDiT(taxonomy=[0] * 1000, num_classes=1000,
                        affine_norms=False, **arch)
    state = {k: v.cpu() for k, v in dit.state_dict().items()
             if k != TAXONOMY_BUFFER}
    torch.save(state, path)


def write_sd_vae(folder: str, tiny: bool = False) -> None:
    """A random diffusers AutoencoderKL with the SD-VAE's architecture (4
    latent channels, downsampling by 8), or with ``tiny`` the same
    downsampling at a few channels, for CPUs."""
    from diffusers import AutoencoderKL
    channels = (8, 8, 8, 8) if tiny else (128, 256, 512, 512)
    AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=('DownEncoderBlock2D', ) * 4,
        up_block_types=('UpDecoderBlock2D', ) * 4,
        block_out_channels=channels, layers_per_block=1 if tiny else 2,
        norm_num_groups=8 if tiny else 32,
        sample_size=256).save_pretrained(folder)


class _Inception(torch.nn.Module):
    """FID's Inception interface: uint8-range images to pooled features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 32, 3, padding=1)

    def forward(self, img: torch.Tensor, return_features: bool = False):
        x = self.conv(img.float() / 255)
        return torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten(1)


def write_inception(path: str) -> None:
    """A random TorchScript module with the interface of FID's Inception
    (``inception-2015-12-05.pt``)."""
    torch.jit.script(_Inception().requires_grad_(False)).save(path)
