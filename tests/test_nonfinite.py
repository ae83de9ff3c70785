"""Non-finite values never reach saved state: the latent cache refuses a NaN
latent naming the image, and training stops before a non-finite update,
naming the iteration, with the last good checkpoint the newest."""
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image
from safetensors.torch import load_file, save_file

from conftest import REPO, TINY_CONFIG, free_port
from finediffusion.datasets.latent_cache import cache_latents
from mmagic.registry import DATASETS, MODELS


def write_images(root, values):
    """A HierarchyDataset folder tree of flat 16-px images, one per value
    (grey level), in sorted order: birds/robin, birds/wren, insects/ant."""
    folders = ['birds/robin', 'birds/wren', 'insects/ant']
    for k, value in enumerate(values):
        folder = osp.join(root, folders[k * len(folders) // len(values)])
        os.makedirs(folder, exist_ok=True)
        array = np.full((16, 16, 3), value, dtype=np.uint8)
        Image.fromarray(array).save(osp.join(folder, f'{k:02d}.png'))
    return str(root)


# (dtype, scale of the first convolution): the VAE overflows to NaN latents
# on black and white images and encodes mid-grey ones; float16 as an fp16
# SD-VAE does.
OVERFLOWS = {'float32': 1e20, 'float16': 1e5}


@pytest.fixture(scope='module', params=sorted(OVERFLOWS))
def overflowing_vae(request, tmp_path_factory):
    """The tiny diffusers VAE of conftest, its first convolution scaled up
    so that it overflows in the given dtype: a VAE config."""
    from diffusers import AutoencoderKL
    folder = tmp_path_factory.mktemp('vae-overflow')
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=('DownEncoderBlock2D', ) * 2,
        up_block_types=('UpDecoderBlock2D', ) * 2,
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8,
        sample_size=16)
    with torch.no_grad():
        vae.encoder.conv_in.weight.mul_(OVERFLOWS[request.param])
    vae.save_pretrained(folder)
    return dict(type='AutoencoderKL', from_pretrained=str(folder),
                dtype=request.param)


def cache_config(tmp_path, image_root, vae):
    """configs/finediffusion_cub200.py (HierarchyDataset) on 16-px images,
    with the given VAE config."""
    cfg = Config.fromfile(osp.join(REPO, 'configs/finediffusion_cub200.py'))
    cfg.model.vae = vae
    dataset = cfg.train_dataloader.dataset
    dataset.data_root, dataset.ann_file = image_root, None
    for step in dataset.pipeline:
        if step['type'] == 'ADMCenterCrop':
            step['size'] = 16
    path = str(tmp_path / 'cache_cfg.py')
    cfg.dump(path)
    return path


def test_cache_refuses_a_nan_latent_naming_the_image(overflowing_vae,
                                                     tmp_path):
    # Ten mid-grey images, then a white one (index 10, the third shard).
    root = write_images(tmp_path / 'images',
                        [100 + 5 * k for k in range(10)] + [255, 120])
    bad = sorted(glob.glob(osp.join(root, '*', '*', '*.png')))[10]
    config = cache_config(tmp_path, root, overflowing_vae)
    cache = str(tmp_path / 'latents')
    command = [sys.executable, osp.join(REPO, 'tools/cache_latents.py'),
               config, cache, '--shard-size', '4', '--batch-size', '2',
               '--device', 'cpu']
    run = subprocess.run(command, capture_output=True, text=True)
    assert run.returncode != 0
    assert bad in run.stderr and 'dataset index 10' in run.stderr, \
        run.stderr[-3000:]
    assert 'Traceback' not in run.stderr
    # The two finished shards stay, with finite latents; the third is not
    # written.
    with open(osp.join(cache, 'manifest.json')) as f:
        manifest = json.load(f)
    assert sorted(manifest['shards']) == [
        'shard_00000.safetensors', 'shard_00001.safetensors']
    assert not manifest.get('complete')
    assert not glob.glob(osp.join(cache, 'shard_00002*'))
    for name in manifest['shards']:
        shard = load_file(osp.join(cache, name))
        assert torch.isfinite(shard['mean']).all()
        assert torch.isfinite(shard['std']).all()
    before = {n: os.path.getmtime(osp.join(cache, n))
              for n in manifest['shards']}

    # The image fixed, a rerun resumes: the finished shards are not redone.
    Image.fromarray(np.full((16, 16, 3), 150, np.uint8)).save(bad)
    run = subprocess.run(command, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert '12 images in 3 shards' in run.stdout
    for name, mtime in before.items():
        assert os.path.getmtime(osp.join(cache, name)) == mtime


def latent_train_config(tmp_path, cache, iters, interval):
    """configs/finediffusion_tiny_cpu.py on a latent cache, with the data
    pipeline and collate function of configs/finediffusion_inat_latents.py,
    in data order."""
    cfg = Config.fromfile(TINY_CONFIG)
    shipped = Config.fromfile(
        osp.join(REPO, 'configs/finediffusion_inat_latents.py'))
    spec = dict(type='LatentDataset', cache_dir=cache)
    cfg.model.backbone.update(taxonomy=spec, num_classes=None,
                              input_size=8, in_channels=4, patch_size=2)
    cfg.train_dataloader.batch_size = 2
    cfg.train_dataloader.sampler.shuffle = False
    cfg.train_dataloader.dataset = dict(
        spec, pipeline=shipped.train_dataloader.dataset.pipeline)
    cfg.train_dataloader.collate_fn = shipped.train_dataloader.collate_fn
    cfg.train_cfg.max_iters = iters
    cfg.default_hooks.checkpoint.interval = interval
    cfg.default_hooks.logger.interval = 1
    cfg.work_dir = str(tmp_path / 'work_dir')
    path = str(tmp_path / 'train_cfg.py')
    cfg.dump(path)
    return cfg, path


def cache_with_a_nan(vae_folder, tmp_path):
    """A latent cache of 12 images written before the writer checked: image
    9 (shard 2, row 1) holds a NaN."""
    root = write_images(tmp_path / 'images', [40 + 15 * k for k in range(12)])
    dataset = DATASETS.build(dict(
        type='HierarchyDataset', data_root=root,
        pipeline=[dict(type='LoadRGBImage'),
                  dict(type='ADMCenterCrop', size=16),
                  dict(type='PackInputs', keys='gt')]))
    vae = MODELS.build(dict(type='AutoencoderKL',
                            from_pretrained=vae_folder)).eval()

    def encode(images):
        posterior = vae.encode(images).latent_dist
        return posterior.mean, posterior.std

    cache = str(tmp_path / 'latents')
    cache_latents(dataset, encode, cache, dict(vae='tiny'), shard_size=4,
                  progress=False)
    shard = osp.join(cache, 'shard_00002.safetensors')
    tensors = load_file(shard)
    tensors['mean'][1, :, 0, 0, 0] = float('nan')
    save_file(tensors, shard)
    return cache


def assert_last_good_checkpoint(work_dir, names):
    checkpoints = sorted(glob.glob(osp.join(work_dir, 'iter_*.pth')))
    assert [osp.basename(c) for c in checkpoints] == names
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        assert f.read().strip().endswith(names[-1])
    state = torch.load(checkpoints[-1], map_location='cpu')['state_dict']
    assert state and all(torch.isfinite(v).all() for v in state.values()
                         if v.is_floating_point())


def test_training_stops_before_a_nonfinite_update(vae_folder, tmp_path):
    cache = cache_with_a_nan(vae_folder, tmp_path)
    # Read in order, 2 per batch, image 9 is in iteration 5.
    cfg, config = latent_train_config(tmp_path, cache, iters=8, interval=2)
    run = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/train.py'), config],
        capture_output=True, text=True)
    assert run.returncode != 0
    log = run.stdout + run.stderr
    assert 'NonFiniteError' in log, log[-3000:]
    assert 'non-finite values at iteration 5' in log
    # The model names the bad sample: its index and cache entry.
    assert re.search(r'dataset index 9 \(\S+shard_00002.safetensors row 1\)',
                     log), log[-3000:]
    assert re.search(r'loss terms on this rank: loss nan', log)
    assert_last_good_checkpoint(cfg.work_dir, ['iter_2.pth', 'iter_4.pth'])


def test_ddp_ranks_stop_at_the_same_iteration(vae_folder, tmp_path):
    """tools/dist_train.sh, 2 ranks over gloo: only rank 1's batch holds
    the NaN, and both ranks stop before the update (none waits forever in
    the next all-reduce)."""
    cache = cache_with_a_nan(vae_folder, tmp_path)
    # Rank r reads indices r, r + 2, ...: image 9 is rank 1's, iteration 3.
    cfg, config = latent_train_config(tmp_path, cache, iters=6, interval=2)
    run = subprocess.run(
        ['bash', osp.join(REPO, 'tools/dist_train.sh'), config, '2'],
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, PORT=free_port()))
    log = run.stdout + run.stderr
    assert run.returncode != 0
    assert log.count('non-finite values at iteration 3') >= 2, log[-4000:]
    # Rank 0's own loss is finite; the all-reduced flag stops it too.
    assert re.search(r'loss [0-9.e+-]+ on this rank \(all ranks: non-finite\)',
                     log), log[-4000:]
    assert_last_good_checkpoint(cfg.work_dir, ['iter_2.pth'])


def test_amp_wrapper_refuses_a_nonfinite_loss(tiny_cfg, monkeypatch):
    """--amp's AmpOptimWrapper, built by the shipped constructor as
    FiniteAmpOptimWrapper (its loss scaler on the CPU here): a NaN loss
    stops before the update; non-finite gradients of a finite loss (the
    scaled backward overflowing) are left to the scaler, which skips."""
    from mmengine.optim.optimizer import amp_optimizer_wrapper

    from finediffusion.engine import FiniteAmpOptimWrapper, NonFiniteError
    from mmagic.registry import OPTIM_WRAPPER_CONSTRUCTORS
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available',
                        lambda: True)
    model = MODELS.build(tiny_cfg.model)
    optim_cfg = dict(tiny_cfg.optim_wrapper, type='AmpOptimWrapper',
                     dtype='bfloat16')
    constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
        type=optim_cfg.pop('constructor'), optim_wrapper_cfg=optim_cfg))
    wrapper = constructor(model)
    assert isinstance(wrapper, FiniteAmpOptimWrapper)
    wrapper.loss_scaler = torch.amp.GradScaler('cpu')
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]

    x = torch.randn(2, 3, 16, 16)
    labels = torch.tensor([0, 1])
    loss = model.latent_loss(x, labels)['loss']
    with pytest.raises(NonFiniteError, match='loss nan'):
        wrapper.update_params(loss * float('nan'))
    wrapper.zero_grad()

    # An overflowing backward pass: the scaler skips the step.
    loss = model.latent_loss(x, labels)['loss']
    params[0].register_hook(lambda grad: grad * float('inf'))
    wrapper.update_params(loss)
    assert all(torch.equal(a, p) for a, p in zip(before, params))
    assert wrapper.loss_scaler.get_scale() < 65536.0


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="MMEngine's AmpOptimWrapper needs a GPU")
def test_amp_training_stops_before_a_nonfinite_update(vae_folder, tmp_path):
    """tools/train.py --amp (bf16 with a loss scaler): the same stop."""
    cache = cache_with_a_nan(vae_folder, tmp_path)
    cfg, config = latent_train_config(tmp_path, cache, iters=8, interval=2)
    run = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/train.py'), config, '--amp'],
        capture_output=True, text=True)
    log = run.stdout + run.stderr
    assert run.returncode != 0
    assert 'non-finite values at iteration 5' in log, log[-3000:]
    assert_last_good_checkpoint(cfg.work_dir, ['iter_2.pth', 'iter_4.pth'])
