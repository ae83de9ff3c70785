"""TieredDataPreprocessor: MMagic's preprocessing, without its per-sample
cost on training batches, in the model's channel order whatever the
loader, and generated images back to MMagic in BGR."""
import copy

import pytest
import torch
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from finediffusion.datasets.synthetic import write_synthetic_hierarchy
from finediffusion.models import TieredDataPreprocessor
from mmagic.models.data_preprocessors import DataPreprocessor
from mmagic.registry import MODELS
from mmagic.structures import DataSample


def _batch(tmp_path, batch_size=6, collate='default_collate'):
    root = write_synthetic_hierarchy(str(tmp_path), 'fine', {'train': 1},
                                     workers=1)['train']
    loader = dict(
        batch_size=batch_size,
        num_workers=0,
        sampler=dict(type='DefaultSampler', shuffle=True, seed=0),
        collate_fn=dict(type=collate),
        dataset=dict(type='HierarchyDataset', data_root=root, pipeline=[
            dict(type='LoadRGBImage', key='gt'),
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


def test_stacked_data_samples_take_the_fast_path(tmp_path):
    """stack_collate's batch (one DataSample) gives what MMagic makes of
    the same images with one DataSample each."""
    stacked = _batch(tmp_path, collate='stack_collate')
    assert isinstance(stacked['data_samples'], DataSample)
    ours = TieredDataPreprocessor()(stacked, training=True)
    theirs = DataPreprocessor()(_batch(tmp_path), training=True)
    assert torch.equal(ours['inputs'], theirs['inputs'])
    assert torch.equal(ours['data_samples'].gt_label.label.flatten(),
                       theirs['data_samples'].gt_label.label.flatten())


def test_other_batches_take_mmagic_path(tmp_path):
    batch = _batch(tmp_path)
    # Evaluation keeps every field of the data samples.
    ours = TieredDataPreprocessor()(copy.deepcopy(batch), training=False)
    assert 'gt_img' in ours['data_samples']
    # A list of images (pseudo_collate) goes through MMagic's path.
    listed = dict(inputs=list(batch['inputs']),
                  data_samples=batch['data_samples'])
    ours = TieredDataPreprocessor()(copy.deepcopy(listed), training=True)
    theirs = DataPreprocessor()(copy.deepcopy(listed), training=True)
    assert torch.equal(ours['inputs'], theirs['inputs'])
    assert 'gt_img' in ours['data_samples']


def _loaded(tmp_path, loader, collate):
    """One training batch of the same files loaded by ``loader``."""
    root = write_synthetic_hierarchy(str(tmp_path), 'fine', {'train': 1},
                                     workers=1)['train']
    cfg = dict(
        batch_size=4,
        num_workers=0,
        sampler=dict(type='DefaultSampler', shuffle=False),
        collate_fn=dict(type=collate),
        dataset=dict(type='HierarchyDataset', data_root=root, pipeline=[
            loader, dict(type='PackInputs', keys='gt')]))
    with DefaultScope.overwrite_default_scope('mmagic'):
        return next(iter(Runner.build_dataloader(cfg)))


@pytest.mark.parametrize('collate', ['default_collate', 'pseudo_collate'])
def test_model_gets_its_channel_order_whatever_the_loader(tmp_path, collate):
    rgb = _loaded(tmp_path, dict(type='LoadRGBImage', key='gt'), collate)
    loaders = [
        dict(type='LoadRGBImage', key='gt', channel_order='bgr'),
        dict(type='LoadImageFromFile', key='gt'),  # MMagic's, BGR (cv2)
    ]
    # The files as PIL reads them (RGB), in [-1, 1].
    expected = torch.stack(list(rgb['inputs'])).float() / 127.5 - 1
    for loader in [None] + loaders:
        batch = rgb if loader is None else _loaded(tmp_path, loader, collate)
        for order, want in (('RGB', expected), ('BGR', expected.flip(1))):
            out = TieredDataPreprocessor(output_channel_order=order)(
                copy.deepcopy(batch), training=True)
            assert torch.allclose(out['inputs'], want, atol=1e-6), (loader,
                                                                    order)


def test_generated_images_reach_mmagic_as_bgr():
    # Model images in [-1, 1]: one red pixel in the model's order.
    for order, pixel in (('RGB', [1., -1., -0.6]), ('BGR', [-0.6, -1., 1.])):
        images = torch.tensor(pixel).view(1, 3, 1, 1)
        # A generation request: labels only, no image and no metainfo.
        request = DataSample()
        request.set_gt_label(torch.tensor([0]))
        preprocessor = TieredDataPreprocessor(output_channel_order=order)
        for samples in (request, [request], None):
            fake = preprocessor.destruct(images, samples)
            assert fake.flatten().round().tolist() == [51., 0., 255.]


def test_channel_order_must_be_declared():
    with pytest.raises(ValueError, match="'RGB' or 'BGR'.*None"):
        TieredDataPreprocessor(output_channel_order=None)


@pytest.mark.parametrize('preprocessor', [
    dict(type='DataPreprocessor'),
    dict(type='DataPreprocessor', output_channel_order='RGB'),
    dict(type='DiTDataPreprocessor', output_channel_order='BGR'),
])
def test_finediffusion_refuses_a_preprocessor_without_rgb(preprocessor):
    backbone = dict(type='TieredDiT', taxonomy=[0, 0], input_size=8,
                    patch_size=4, in_channels=3,
                    arch=dict(depth=1, hidden_size=32, num_heads=2))
    with pytest.raises(ValueError, match=r"output_channel_order='RGB'.*got "
                       + preprocessor['type']):
        MODELS.build(dict(type='FineDiffusion', backbone=backbone,
                          trainable='full', data_preprocessor=preprocessor))
