"""The latent cache: interrupted and resumed runs write the same files as an
uninterrupted one, and training on it gives the loss of training on images."""
import filecmp
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from PIL import Image
from safetensors.torch import load_file

from conftest import REPO
from finediffusion.datasets.latent_cache import cache_latents
from mmagic.registry import DATASETS, MODELS

PIPELINE = [
    dict(type='LoadTieredImage'),
    dict(type='ADMCenterCrop', size=16),
    dict(type='PackInputs', keys='gt'),
]


@pytest.fixture(scope='module')
def image_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('hier')
    rng = np.random.default_rng(0)
    for sup, subs in (('birds', ('robin', 'wren')), ('insects', ('ant', ))):
        for sub in subs:
            os.makedirs(root / sup / sub)
            for k in range(3):
                array = rng.integers(0, 256, (20, 18, 3), dtype=np.uint8)
                Image.fromarray(array).save(root / sup / sub / f'{k}.png')
    return str(root)


def dataset(image_root):
    return DATASETS.build(dict(type='HierarchyDataset', data_root=image_root,
                               pipeline=PIPELINE))


def vae_encoder(vae_folder):
    vae = MODELS.build(dict(type='AutoencoderKL',
                            from_pretrained=vae_folder)).eval()

    def encode(images):
        posterior = vae.encode(images).latent_dist
        return posterior.mean, posterior.std

    return encode


class Interrupted(Exception):
    pass


class InterruptAt:
    """The dataset, stopping the run when image ``stop`` is reached."""

    def __init__(self, inner, stop):
        self.inner, self.stop = inner, stop
        self.metainfo = inner.metainfo

    def __len__(self):
        return len(self.inner)

    def prepare_data(self, index):
        if index == self.stop:
            raise Interrupted
        return self.inner.prepare_data(index)


def test_resumed_cache_equals_uninterrupted(image_root, vae_folder,
                                            tmp_path):
    ds, encode = dataset(image_root), vae_encoder(vae_folder)
    description = dict(vae='tiny')
    whole = str(tmp_path / 'whole')
    cache_latents(ds, encode, whole, description, shard_size=4, batch_size=3,
                  progress=False)

    resumed = str(tmp_path / 'resumed')
    with pytest.raises(Interrupted):  # in shard 1, after shard 0 is written
        cache_latents(InterruptAt(ds, 6), encode, resumed, description,
                      shard_size=4, batch_size=3, progress=False)
    with open(osp.join(resumed, 'manifest.json')) as f:
        assert list(json.load(f)['shards']) == ['shard_00000.safetensors']
    # A shard cut off while being written is redone, not trusted.
    with open(osp.join(resumed, 'shard_00001.safetensors.partial'), 'wb') as f:
        f.write(b'half a shard')
    cache_latents(ds, encode, resumed, description, shard_size=4,
                  batch_size=3, progress=False)

    names = sorted(n for n in os.listdir(whole) if n.endswith('.safetensors'))
    assert names == ['shard_00000.safetensors', 'shard_00001.safetensors',
                     'shard_00002.safetensors']
    match, mismatch, errors = filecmp.cmpfiles(whole, resumed,
                                               names + ['manifest.json'],
                                               shallow=False)
    assert not mismatch and not errors, (mismatch, errors)

    with pytest.raises(ValueError, match='another description'):
        cache_latents(ds, encode, resumed, dict(vae='other'), shard_size=4,
                      progress=False)


def test_training_on_latents_gives_the_image_loss(image_root, vae_folder,
                                                  tiny_cfg, tmp_path):
    cfg = Config(dict(
        model=dict(vae=dict(type='AutoencoderKL', from_pretrained=vae_folder)),
        train_dataloader=dict(dataset=dict(
            type='HierarchyDataset', data_root=image_root,
            pipeline=PIPELINE))))
    config = str(tmp_path / 'cache_cfg.py')
    cfg.dump(config)
    cache = str(tmp_path / 'latents')
    run = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/cache_latents.py'), config,
         cache, '--shard-size', '4', '--device', 'cpu'],
        capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert '9 images in 3 shards' in run.stdout

    model = MODELS.build(dict(
        type='FineDiffusion',
        vae=dict(type='AutoencoderKL', from_pretrained=vae_folder),
        backbone=dict(type='TieredDiT',
                      sub2super=dict(type='LatentDataset', cache_dir=cache),
                      arch=dict(depth=1, hidden_size=32, num_heads=2),
                      patch_size=2, input_size=8, in_channels=4),
        trainable='full', ema_decay=None))
    images = dataset(image_root)
    latents = DATASETS.build(dict(
        type='LatentDataset', cache_dir=cache,
        pipeline=[dict(type='LoadLatent'),
                  dict(type='PickLatentFlip', prob=0.0),
                  dict(type='PackInputs', keys=[],
                       data_keys=['latent_mean', 'latent_std'])]))
    assert latents.metainfo['taxonomy'] == images.metainfo['taxonomy']
    picks = [0, 4, 8]

    def loss(ds):
        batch = model.data_preprocessor(
            pseudo_collate([ds[i] for i in picks]), True)
        torch.manual_seed(7)
        with torch.no_grad():
            return model(**batch, mode='loss')['loss']

    from_images, from_latents = loss(images), loss(latents)
    assert torch.isfinite(from_images)
    assert torch.allclose(from_images, from_latents, rtol=1e-5, atol=1e-6)


def test_cache_encodes_the_model_images_whatever_the_loader(
        image_root, vae_folder, tmp_path):
    """The VAE encodes what training on images feeds the model (RGB), from
    our RGB loader and from MMagic's BGR one (OpenCV) alike."""
    encode = vae_encoder(vae_folder)
    caches = []
    for loader in (dict(type='LoadTieredImage'),
                   dict(type='LoadImageFromFile', key='gt')):
        ds = DATASETS.build(dict(
            type='HierarchyDataset', data_root=image_root,
            pipeline=[loader] + PIPELINE[1:]))
        cache = str(tmp_path / loader['type'])
        cache_latents(ds, encode, cache, dict(vae='tiny'), shard_size=16,
                      progress=False)
        caches.append(load_file(osp.join(cache, 'shard_00000.safetensors')))
    rgb, bgr = caches
    assert torch.equal(rgb['labels'], bgr['labels'])
    assert torch.allclose(rgb['mean'], bgr['mean'], atol=1e-6)
    assert torch.allclose(rgb['std'], bgr['std'], atol=1e-6)
