"""TieredDataPreprocessor: MMagic's preprocessing, without its per-sample
cost on training batches."""
import copy

import torch
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from finediffusion.datasets.synthetic import write_synthetic_hierarchy
from finediffusion.models import TieredDataPreprocessor
from mmagic.models.data_preprocessors import DataPreprocessor


def _batch(tmp_path, batch_size=6):
    root = write_synthetic_hierarchy(str(tmp_path), 'fine', {'train': 1},
                                     workers=1)['train']
    loader = dict(
        batch_size=batch_size,
        num_workers=0,
        sampler=dict(type='DefaultSampler', shuffle=True),
        collate_fn=dict(type='default_collate'),
        dataset=dict(type='HierarchyDataset', data_root=root, pipeline=[
            dict(type='LoadTieredImage', key='gt'),
            dict(type='PackInputs', keys='gt'),
        ]))
    with DefaultScope.overwrite_default_scope('mmagic'):
        return next(iter(Runner.build_dataloader(loader)))


def test_training_batch_matches_mmagic_preprocessing(tmp_path):
    batch = _batch(tmp_path)
    # Copies: MMagic's preprocessing edits the data samples in place.
    ours = TieredDataPreprocessor()(copy.deepcopy(batch), training=True)
    theirs = DataPreprocessor()(copy.deepcopy(batch), training=True)
    assert ours['inputs'].dtype == torch.float32
    assert torch.equal(ours['inputs'], theirs['inputs'])
    assert ours['inputs'].min() >= -1 and ours['inputs'].max() <= 1
    assert torch.equal(ours['data_samples'].gt_label.label.flatten(),
                       theirs['data_samples'].gt_label.label.flatten())
    assert 'latent_mean' not in ours['data_samples']


def test_other_batches_take_mmagic_path(tmp_path):
    batch = _batch(tmp_path)
    # Evaluation keeps every field of the data samples.
    ours = TieredDataPreprocessor()(copy.deepcopy(batch), training=False)
    assert 'gt_img' in ours['data_samples']
    # A channel conversion is MMagic's to do.
    ours = TieredDataPreprocessor(output_channel_order='BGR')(
        copy.deepcopy(batch), training=True)
    theirs = DataPreprocessor(output_channel_order='BGR')(
        copy.deepcopy(batch), training=True)
    assert torch.equal(ours['inputs'], theirs['inputs'])
    assert 'gt_img' in ours['data_samples']
