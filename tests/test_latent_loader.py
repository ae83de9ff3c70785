"""The shipped latent config's loading: a sample owns its rows, a batch
crosses from a data-loader worker as a few stacked tensors, and the data
preprocessor hands the model one DataSample on the device."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmengine.structures import BaseDataElement
from safetensors.torch import load_file

from conftest import REPO
from finediffusion.datasets import LoadLatent, Taxonomy
from finediffusion.datasets.latent_cache import cache_latents
from finediffusion.models import TieredDataPreprocessor
from mmagic.structures import DataSample

SHIPPED = osp.join(REPO, 'configs', 'finediffusion_inat_latents.py')
TAXONOMY = Taxonomy(['robin', 'wren', 'ant'], [0, 0, 1], ['birds', 'insects'])


class LabelsOnly:
    """A stand-in image dataset for the cache writer: ten tiny images."""

    metainfo = dict(taxonomy=TAXONOMY.to_dict())

    def __len__(self):
        return 10

    def prepare_data(self, index):
        sample = DataSample(metainfo=dict(gt_channel_order='rgb'))
        sample.set_gt_label(torch.tensor([index % 3]))
        return dict(inputs=torch.zeros(3, 4, 4, dtype=torch.uint8),
                    data_samples=sample)


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
    """A finished cache of 10 random posteriors (4 x 8 x 8), shards of 4."""
    generator = torch.Generator().manual_seed(0)

    def encode(images):
        shape = (len(images), 4, 8, 8)
        return (torch.randn(shape, generator=generator),
                torch.rand(shape, generator=generator) + 0.01)

    folder = str(tmp_path_factory.mktemp('latents'))
    cache_latents(LabelsOnly(), encode, folder, dict(vae='random'),
                  shard_size=4, progress=False)
    return folder


def shipped_loader(cache, **overrides):
    """The shipped config's train_dataloader on ``cache``, batches of 4."""
    cfg = Config.fromfile(SHIPPED).train_dataloader
    cfg.dataset.cache_dir = cache
    cfg.update(dict(dict(batch_size=4, num_workers=0,
                         persistent_workers=False,
                         pin_memory=torch.cuda.is_available()), **overrides))
    with DefaultScope.overwrite_default_scope('mmagic'):
        return Runner.build_dataloader(cfg, seed=0)


def tensors_in(value) -> int:
    """The tensors a batch holds, each of which a worker hands over in its
    own shared-memory segment."""
    if isinstance(value, torch.Tensor):
        return 1
    if isinstance(value, BaseDataElement):
        return sum(tensors_in(v) for v in value.values()) + sum(
            tensors_in(v) for v in value.metainfo_values())
    if isinstance(value, dict):
        return sum(tensors_in(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensors_in(v) for v in value)
    return 0


def test_loaded_rows_own_their_memory(cache):
    """A row read from a memory-mapped shard is copied out: a view would
    drag the whole shard tensor into every sample a worker hands over."""
    path = osp.join(cache, 'shard_00001.safetensors')
    shard = load_file(path)
    results = LoadLatent().transform(dict(latent_path=path, latent_row=2))
    for key in ('mean', 'std'):
        row = results[f'latent_{key}']
        assert torch.equal(row, shard[key][2])
        assert row.untyped_storage().nbytes() == (row.nelement()
                                                  * row.element_size())


def test_a_batch_crosses_from_a_worker_as_three_tensors(cache):
    for batch_size in (2, 4):
        batch = next(iter(shipped_loader(cache, batch_size=batch_size,
                                         num_workers=1)))
        # latent_mean, latent_std and gt_label, stacked in the worker.
        assert tensors_in(batch) == 3
        assert batch['inputs']['latent_mean'].shape == (batch_size, 2 * 2,
                                                        8, 8)
        assert isinstance(batch['data_samples'], DataSample)


def test_the_model_gets_one_data_sample_of_cache_rows(cache):
    batch = next(iter(shipped_loader(cache)))
    out = TieredDataPreprocessor()(batch, training=True)
    assert out['inputs'] is None
    samples = out['data_samples']
    assert samples.gt_label.label.shape == (4, )
    meta = samples.metainfo
    assert len(meta['sample_idx']) == len(meta['latent_path']) == 4
    shards = {}
    for i, (path, row) in enumerate(zip(meta['latent_path'],
                                        meta['latent_row'])):
        shard = shards.setdefault(path, load_file(path))
        assert int(samples.gt_label.label[i]) == int(shard['labels'][row])
        # Either flip, the same for mean and std.
        flips = [f for f in (0, 1) if torch.equal(
            samples.latent_mean[i], shard['mean'][row, f])]
        assert len(flips) == 1
        assert torch.equal(samples.latent_std[i], shard['std'][row,
                                                               flips[0]])
    # The same draws through MMEngine's pseudo_collate: the same batch.
    listed = next(iter(shipped_loader(
        cache, collate_fn=dict(type='pseudo_collate'))))
    ref = TieredDataPreprocessor()(listed, training=True)['data_samples']
    for key in ('latent_mean', 'latent_std'):
        assert torch.equal(ref.get(key), samples.get(key))
    assert torch.equal(ref.gt_label.label, samples.gt_label.label)
    assert ref.metainfo == meta


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
def test_pinned_latents_reach_the_gpu(cache):
    batch = next(iter(shipped_loader(cache, num_workers=1)))
    assert batch['inputs']['latent_mean'].is_pinned()
    out = TieredDataPreprocessor().cuda()(batch, training=True)
    assert out['data_samples'].latent_mean.is_cuda
    assert out['data_samples'].gt_label.label.is_cuda
