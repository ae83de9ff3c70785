"""FineDiffusion among MMagic's own generative models: an MMagic GAN and
FineDiffusion trained in one process on our datasets; MMagic's GAN
visualisation and noise-driven metrics on FineDiffusion; the inferencer."""
import json
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from conftest import REPO, TINY_CONFIG
from finediffusion.datasets.synthetic import write_synthetic_hierarchy
from mmagic.registry import MODELS
from mmagic.structures import DataSample

GAN_CONFIG = osp.join(REPO, 'configs', 'mmagic', 'sngan_proj_synthetic.py')
GAN_TOOLS_CONFIG = osp.join(REPO, 'configs', 'mmagic',
                            'finediffusion_gan_tools.py')


@pytest.fixture(scope='module')
def synthetic_root(tmp_path_factory) -> str:
    """The synthetic 'fine' hierarchy (100 species), one 32 px image each."""
    root = str(tmp_path_factory.mktemp('synthetic'))
    return write_synthetic_hierarchy(root, 'fine', {'train': 1}, size=32,
                                     workers=1)['train']


def _train(cfg: Config, max_iters: int, resume: bool = False) -> Runner:
    cfg = cfg.copy()
    cfg.train_cfg.max_iters = max_iters
    cfg.resume = resume
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def test_mmagic_gan_and_finediffusion_train_in_one_process(
        synthetic_root, tmp_path):
    gan = Config.fromfile(GAN_CONFIG)
    gan.train_dataloader.dataset.data_root = synthetic_root
    gan.train_dataloader.batch_size = 4
    gan.default_hooks.checkpoint.interval = 2
    gan.work_dir = str(tmp_path / 'sngan')
    _train(gan, 2)
    # Resuming reads MMagic's checkpoint weights-only (torch's default).
    runner = _train(gan, 3, resume=True)
    assert runner.iter == 3
    assert runner.model.generator.num_classes == 100
    betas = runner.optim_wrapper['generator'].optimizer.param_groups[0][
        'betas']
    assert betas == (0.0, 0.999)

    diffusion = Config.fromfile(TINY_CONFIG)
    taxonomy = dict(type='HierarchyDataset', data_root=synthetic_root)
    diffusion.model.backbone.update(taxonomy=taxonomy, num_classes=100,
                                    input_size=32)
    diffusion.train_dataloader.dataset = dict(
        taxonomy, pipeline=diffusion.train_pipeline)
    diffusion.default_hooks.checkpoint.interval = 2
    diffusion.work_dir = str(tmp_path / 'finediffusion')
    runner = _train(diffusion, 2)
    assert runner.iter == 2
    assert runner.model.backbone.num_classes == 100
    assert osp.isfile(tmp_path / 'finediffusion' / 'iter_2.pth')


@pytest.fixture
def tiny_model():
    cfg = Config.fromfile(TINY_CONFIG)
    cfg.model.num_sampling_steps = 2
    torch.manual_seed(0)
    return MODELS.build(cfg.model).eval()


def test_predict_keeps_the_sample_fields_and_draws_labels(tiny_model):
    """As MMagic's conditional GANs: no labels, uniform subclass draws;
    the input sample's fields (gt_img for SWD) stay in the output."""
    torch.manual_seed(1)
    out = tiny_model.val_step(dict(inputs=dict(num_batches=64)))
    labels = torch.cat([s.gt_label.label.reshape(-1) for s in out])
    assert len(out) == 64 and set(labels.tolist()) == {0, 1, 2, 3}
    assert out[0].fake_img.shape == (3, 16, 16)

    samples = [DataSample(gt_img=torch.full((3, 16, 16), 7.)),
               DataSample(gt_img=torch.full((3, 16, 16), 9.))]
    for sample, label in zip(samples, (2, 3)):
        sample.set_gt_label(label)
    out = tiny_model.val_step(dict(inputs=dict(sample_model='orig'),
                                   data_samples=samples))
    assert [int(s.gt_label.label) for s in out] == [2, 3]
    assert [float(s.gt_img.mean()) for s in out] == [7., 9.]
    assert all(s.sample_model == 'orig' for s in out)


def test_given_noise_is_x_t(tiny_model):
    """The VisualizationHook's fixed input: x_T from noise_fn, reused; with
    a deterministic scheduler (DDIM) the images repeat."""
    noise = tiny_model.noise_fn(num_batches=2)
    assert noise.shape == (2, 3, 16, 16)
    samples = [DataSample(), DataSample()]
    for sample in samples:
        sample.set_gt_label(1)
    ddim = dict(scheduler=dict(type='DDIMScheduler'))

    def images(x_t):
        out = tiny_model.val_step(dict(
            inputs=dict(noise=x_t, sample_kwargs=ddim), data_samples=samples))
        return torch.stack([s.fake_img for s in out])

    assert torch.equal(images(noise), images(noise))
    assert not torch.equal(images(noise), images(-noise))
    with pytest.raises(ValueError, match='noise of shape'):
        tiny_model.sample(torch.tensor([0]), noise=noise)


def test_mmagic_gan_tools_on_finediffusion(toy_root, tmp_path):
    """The shipped config through tools/train.py: MMagic's
    VisualizationHook ('GAN'), FID without need_cond_input, IS, SWD and
    MS-SSIM in MMagic's MultiValLoop."""
    from test_evaluation import FakeInception
    inception = str(tmp_path / 'inception.pt')
    torch.jit.script(FakeInception().requires_grad_(False)).save(inception)
    work = tmp_path / 'work'
    run = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/train.py'), GAN_TOOLS_CONFIG,
         '--work-dir', str(work), '--cfg-options', f'data_root={toy_root}',
         'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
         'custom_hooks.3.interval=2',
         f'val_evaluator.metrics.0.inception_path={inception}',
         f'val_evaluator.metrics.1.inception_path={inception}'],
        capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    (scalars, ) = work.glob('*/vis_data/scalars.json')
    with open(scalars) as f:
        metrics = [json.loads(line) for line in f if 'FID/fid' in line]
    assert len(metrics) == 1
    metrics = metrics[0]
    for key in ('FID/fid', 'SWD/avg', 'MS-SSIM/avg'):
        assert np.isfinite(metrics[key]) and metrics[key] >= 0, key
    assert 'IS/is' in metrics
    assert list(work.glob('*/vis_data/vis_image/fake_img_2.png'))


def test_inferencer_names_in_images_and_grid_out(tmp_path, tiny_run):
    from finediffusion.inferencer import FineDiffusionInferencer
    config, ckpt, _ = tiny_run
    inferencer = FineDiffusionInferencer(config, ckpt, device='cpu')
    names = inferencer.taxonomy.names
    out = str(tmp_path / 'samples')
    results = inferencer([0, names[3]], per_class=2, batch_size=3,
                         num_sampling_steps=2, out_dir=out)
    predictions = results['predictions']
    assert [p['label'] for p in predictions] == [0, 0, 3, 3]
    assert predictions[2]['class_name'] == names[3]
    assert predictions[0]['img'].shape == (16, 16, 3)
    assert predictions[0]['img'].dtype == np.uint8
    assert results['visualization'][0].ndim == 3
    assert osp.isfile(osp.join(out, 'grid.png'))
    assert osp.isfile(osp.join(out, '3_1.png'))
    again = inferencer([0, names[3]], per_class=2, batch_size=3,
                       num_sampling_steps=2)
    assert all(np.array_equal(a['img'], b['img'])
               for a, b in zip(predictions, again['predictions']))
    with pytest.raises(ValueError, match='unknown'):
        inferencer(['no such class'])


def test_predict_takes_mmagic_requests_and_refuses_bad_ones(tiny_model):
    samples = [DataSample(), DataSample()]
    for sample, label in zip(samples, (2, 3)):
        sample.set_gt_label(label)
    # A list of samples, as a direct predict call gives it.
    out = tiny_model.predict(dict(sample_model='ema/orig'), samples)
    assert [int(s.gt_label.label) for s in out] == [2, 3]
    assert out[0].ema.fake_img.shape == out[0].orig.fake_img.shape == (
        3, 16, 16)
    images = torch.rand(2, 3, 16, 16)
    out = tiny_model.predict(dict(img=images, sample_model='orig'), None)
    assert torch.equal(out[1].gt_img, images[1])
    bad = [
        (dict(sample_model='EMA'), 'sample_model'),
        (dict(num_batches=0), 'num_batches'),
        (dict(num_batches=2.5), 'num_batches'),
        (dict(noise=torch.zeros(2, 3, 8, 8)), r'noise of shape \(2, 3, 8, 8\)'),
        (dict(num_batches=2, sample_kwargs=dict(use_ema=False)), 'use_ema'),
    ]
    for request, match in bad:
        with pytest.raises(ValueError, match=match):
            tiny_model.predict(request, None)


def test_cfg_options_reach_the_copies_in_the_mmagic_configs():
    from finediffusion.config import load_config
    gan = load_config(GAN_CONFIG, dict(data_root='/data/mine'))
    assert gan.train_dataloader.dataset.data_root == '/data/mine'
    tools = load_config(GAN_TOOLS_CONFIG,
                        dict(inception_path='/w/inception.pt',
                             image_shape=(3, 32, 32)))
    metrics = tools.val_evaluator.metrics
    assert metrics[0].inception_path == metrics[1].inception_path == \
        '/w/inception.pt'
    assert tuple(metrics[2].image_shape) == (3, 32, 32)


def test_inferencer_refuses_bad_requests_and_keeps_earlier_output(
        tmp_path, tiny_run):
    from finediffusion.inferencer import FineDiffusionInferencer
    config, ckpt, _ = tiny_run
    inferencer = FineDiffusionInferencer(config, ckpt, device='cpu')
    for inputs, kwargs, match in (([], {}, 'no classes'),
                                  ([0], dict(per_class=0), 'per_class'),
                                  ([0], dict(batch_size=0), 'batch_size')):
        with pytest.raises(ValueError, match=match):
            inferencer(inputs, num_sampling_steps=1, **kwargs)
    out = tmp_path / 'samples'
    out.mkdir()
    (out / 'grid.png').write_bytes(b'earlier')
    with pytest.raises(FileExistsError, match='already holds files'):
        inferencer([0], num_sampling_steps=1, out_dir=str(out))
    assert (out / 'grid.png').read_bytes() == b'earlier'
    broken = tmp_path / 'broken.pth'
    broken.write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='broken.pth is not a readable'):
        FineDiffusionInferencer(config, str(broken), device='cpu')
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        FineDiffusionInferencer(config, str(tmp_path / 'missing.pth'),
                                device='cpu')
