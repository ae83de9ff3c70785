"""The latent cache: interrupted and resumed runs, and runs loading with
workers, write the same files as an uninterrupted serial one; training on
it gives the loss of training on images, and on a float16 cache the loss of
a float32 one."""
import filecmp
import glob
import json
import os
import os.path as osp
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from PIL import Image
from safetensors.torch import load_file

from conftest import REPO, load_tool
from finediffusion.datasets.latent_cache import (NonFiniteLatentError,
                                                 cache_latents)
from mmagic.registry import DATASETS, MODELS

PIPELINE = [
    dict(type='LoadRGBImage'),
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
    config = cache_config(image_root, vae_folder, tmp_path)
    cache = str(tmp_path / 'latents')
    run = write_cache(config, cache, '--dtype', 'float32')
    assert '9 images in 3 shards' in run.stdout

    model = MODELS.build(dict(
        type='FineDiffusion',
        vae=dict(type='AutoencoderKL', from_pretrained=vae_folder),
        backbone=dict(type='TieredDiT',
                      taxonomy=dict(type='LatentDataset', cache_dir=cache),
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
    for loader in (dict(type='LoadRGBImage'),
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


def cache_config(image_root, vae_folder, tmp_path):
    """A config for tools/cache_latents.py: the tiny VAE over the images."""
    cfg = Config(dict(
        model=dict(vae=dict(type='AutoencoderKL', from_pretrained=vae_folder)),
        train_dataloader=dict(dataset=dict(
            type='HierarchyDataset', data_root=image_root,
            pipeline=PIPELINE))))
    config = str(tmp_path / 'cache_cfg.py')
    cfg.dump(config)
    return config


def write_cache(config, cache, *options):
    """tools/cache_latents.py CONFIG CACHE on the CPU, shards of 4."""
    run = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/cache_latents.py'), config,
         cache, '--shard-size', '4', '--device', 'cpu', *options],
        capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def training_losses(tmp_path, cache, name):
    """The loss of each of 6 iterations of tools/train.py: the tiny CPU
    config on ``cache`` with the shipped latent config's data loading."""
    from test_nonfinite import latent_train_config
    os.makedirs(tmp_path / name)
    cfg, _ = latent_train_config(tmp_path / name, cache, iters=6,
                                 interval=6)
    cfg.custom_imports = dict(imports=['finediffusion', 'probes'],
                              allow_failed_imports=False)
    cfg.custom_hooks.append(dict(type='LossProbeHook'))
    config = str(tmp_path / name / 'probed_cfg.py')
    cfg.dump(config)
    env = dict(os.environ, PYTHONPATH=osp.join(REPO, 'tests') + os.pathsep
               + os.environ.get('PYTHONPATH', ''))
    run = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/train.py'), config],
        capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    curve = {}
    for path in glob.glob(osp.join(cfg.work_dir, 'losses_*.jsonl')):
        with open(path) as f:
            curve.update((i, loss) for i, loss in map(json.loads, f))
    return [curve[i] for i in sorted(curve)]


# Largest relative difference between the training losses of 6 iterations
# on a float16 and on a float32 cache of the same images, the same seed:
# measured 1.9e-7 here (float16 rounds each stored value by at most 2^-11
# of it, 4.9e-4); the bound leaves a factor of 50.
FLOAT16_LOSS_RTOL = 1e-5


def test_float16_cache_trains_as_float32(image_root, vae_folder, tmp_path):
    config = cache_config(image_root, vae_folder, tmp_path)
    caches = {}
    for dtype in ('float32', 'float16'):
        caches[dtype] = str(tmp_path / dtype)
        write_cache(config, caches[dtype], '--dtype', dtype)
        with open(osp.join(caches[dtype], 'manifest.json')) as f:
            assert json.load(f)['dtype'] == dtype
    half = load_file(osp.join(caches['float16'], 'shard_00000.safetensors'))
    full = load_file(osp.join(caches['float32'], 'shard_00000.safetensors'))
    for key in ('mean', 'std'):
        assert half[key].dtype == torch.float16
        assert torch.equal(half[key], full[key].half())
    assert torch.equal(half['labels'], full['labels'])
    # The loader hands the model what is stored.
    latents = DATASETS.build(dict(
        type='LatentDataset', cache_dir=caches['float16'],
        pipeline=[dict(type='LoadLatent')]))
    assert latents[0]['latent_mean'].dtype == torch.float16

    from_full = training_losses(tmp_path, caches['float32'], 'full')
    from_half = training_losses(tmp_path, caches['float16'], 'half')
    assert len(from_full) == len(from_half) == 6
    worst = max(abs(h - f) / abs(f) for h, f in zip(from_half, from_full))
    print(f'float16 against float32 cache: loss within {worst:.2e}')
    assert 0 < worst < FLOAT16_LOSS_RTOL, (from_full, from_half)


def test_workers_write_the_serial_cache(image_root, vae_folder, tmp_path):
    """Images loaded by two workers give the files of loading them in this
    process; an unreadable image is skipped and counted either way."""
    root = tmp_path / 'images'
    shutil.copytree(image_root, root)
    (root / 'birds' / 'wren' / '1b.png').write_bytes(b'not a png')
    ds = DATASETS.build(dict(type='HierarchyDataset', data_root=str(root),
                             pipeline=PIPELINE))
    encode = vae_encoder(vae_folder)
    folders = []
    for workers in (0, 2):
        folders.append(str(tmp_path / f'workers{workers}'))
        manifest = cache_latents(ds, encode, folders[-1], dict(vae='tiny'),
                                 shard_size=4, batch_size=3, progress=False,
                                 workers=workers)
        broken = [i for i in range(len(ds))
                  if ds.get_data_info(i)['gt_path'].endswith('1b.png')]
        assert manifest['skipped'] == broken
        assert sum(manifest['shards'].values()) == len(ds) - 1
    names = sorted(os.listdir(folders[0]))
    assert names == sorted(os.listdir(folders[1]))
    match, mismatch, errors = filecmp.cmpfiles(*folders, names,
                                               shallow=False)
    assert not mismatch and not errors, (mismatch, errors)


def test_storage_dtype_is_checked(image_root, tmp_path):
    ds = dataset(image_root)

    def huge(images):  # beyond float16's 65504
        shape = (len(images), 4, 2, 2)
        return torch.full(shape, 1e5), torch.ones(shape)

    cache = str(tmp_path / 'huge')
    with pytest.raises(NonFiniteLatentError,
                       match=r'robin/0.png \(dataset index 0\)'):
        cache_latents(ds, huge, cache, dict(vae='huge'), shard_size=4,
                      progress=False, dtype='float16')
    # Stored in float32, the same posteriors are kept.
    cache_latents(ds, huge, cache + '32', dict(vae='huge'), shard_size=4,
                  progress=False)
    with pytest.raises(ValueError, match="one of.*'float64'"):
        cache_latents(ds, huge, cache, dict(vae='huge'), progress=False,
                      dtype='float64')

    # A resumed run must store what the cache stores; a manifest that
    # names no dtype holds float32.
    def small(images):
        shape = (len(images), 4, 2, 2)
        return torch.zeros(shape), torch.ones(shape)

    cache = str(tmp_path / 'resumed')
    with pytest.raises(Interrupted):
        cache_latents(InterruptAt(ds, 6), small, cache, dict(vae='small'),
                      shard_size=4, progress=False)
    with pytest.raises(ValueError, match='another dtype'):
        cache_latents(ds, small, cache, dict(vae='small'), shard_size=4,
                      progress=False, dtype='float16')
    path = osp.join(cache, 'manifest.json')
    with open(path) as f:
        manifest = json.load(f)
    del manifest['dtype']
    with open(path, 'w') as f:
        json.dump(manifest, f)
    manifest = cache_latents(ds, small, cache, dict(vae='small'),
                             shard_size=4, progress=False)
    assert manifest['complete'] and manifest['dtype'] == 'float32'


def test_channels_last_encodes_as_contiguous(image_root, vae_folder,
                                             tmp_path):
    """--channels-last goes through MMagic's VAE
    wrapper and writes the latents of the contiguous layout."""
    config = cache_config(image_root, vae_folder, tmp_path)
    caches = {}
    for layout in ('--no-channels-last', '--channels-last'):
        caches[layout] = str(tmp_path / layout.strip('-'))
        write_cache(config, caches[layout], layout, '--dtype', 'float32')
    plain, last = (load_file(osp.join(caches[layout],
                                      'shard_00000.safetensors'))
                   for layout in ('--no-channels-last', '--channels-last'))
    for key in ('mean', 'std'):
        torch.testing.assert_close(last[key], plain[key], rtol=1e-4,
                                   atol=1e-5)


def test_the_compiled_encoder_pads_short_batches_into_one_graph(vae_folder):
    # Compiled, the SD-VAE encoder ran 2.3x as fast on an H200; a shard's
    # short last batch (or one with skipped images) must neither recompile
    # nor change the latents of its images.
    from diffusers import AutoencoderKL
    from torch._dynamo.utils import counters
    tool = load_tool('cache_latents')
    cpu = torch.device('cpu')
    eager = tool.make_encoder(AutoencoderKL.from_pretrained(vae_folder), cpu,
                              False, False, None, 8)
    torch._dynamo.reset()
    counters.clear()
    compiled = tool.make_encoder(AutoencoderKL.from_pretrained(vae_folder),
                                 cpu, False, False, dict(backend='aot_eager'),
                                 8)
    images = torch.rand(8, 3, 16, 16) * 2 - 1
    for n in (8, 6, 3):
        mean, std = compiled(images[:n])
        expected = eager(images[:n])
        assert mean.shape == (n, 4, 8, 8)
        torch.testing.assert_close(mean, expected[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(std, expected[1], rtol=1e-5, atol=1e-6)
    assert counters['stats']['unique_graphs'] == 1, dict(counters['stats'])


def test_the_steady_rate_leaves_out_the_first_batch(image_root, vae_folder,
                                                    tmp_path):
    # The first batch carries torch.compile's compilation on a GPU (22 s of
    # the 30 s that 4,096 images took on an H200): the steady rate is
    # reported beside the whole run's, over the other batches' images.
    import re
    config = cache_config(image_root, vae_folder, tmp_path)
    run = write_cache(config, str(tmp_path / 'cache'), '--batch-size', '2')
    text = run.stdout
    whole = re.search(r'9 encoded by this run in ([\d.]+) s after start-up, '
                      r'([\d.]+) img/s$', text, re.M)
    steady = re.search(r'^after the first batch \(([\d.]+) s, compilation '
                       r'included\): ([\d.]+) img/s$', text, re.M)
    assert whole and steady, text
    assert float(steady.group(1)) <= float(whole.group(1))
    assert float(steady.group(2)) > 0
