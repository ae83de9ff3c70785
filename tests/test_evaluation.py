"""FID, LPIPS diversity and classifier fidelity, end to end in MMagic's
MultiTestLoop through tools/test.py, with locally made weight files standing
in for the pretrained ones (which cannot be downloaded here)."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torchvision

from conftest import REPO, free_port, toy_test_dataloader
from finediffusion.evaluation import ConditionalFID, LPIPSDiversity

CLASSIFIER_CFG = """
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(num_classes=4, mean=[127.5] * 3, std=[127.5] * 3,
                           to_rgb=True),
    backbone=dict(type='ResNet', depth=18, out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=4, in_channels=512,
              loss=dict(type='CrossEntropyLoss')))
"""


class FakeInception(torch.nn.Module):
    """TorchScript stand-in with the interface of StyleGAN's Inception:
    uint8 images in, 2048 features out (and the same for the Inception
    Score's logits)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 32, 3, padding=1)

    def forward(self, img: torch.Tensor, return_features: bool = False,
                no_output_bias: bool = False):
        x = self.conv(img.float() / 255)
        return torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten(1)


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp('weights')
    torch.manual_seed(0)
    inception = str(root / 'inception-2015-12-05.pt')
    # Frozen, as the real file is (MMagic reads its features as numpy).
    torch.jit.script(FakeInception().requires_grad_(False)).save(inception)
    alexnet = str(root / 'alexnet-owt-7be5be79.pth')
    torch.save(torchvision.models.alexnet().state_dict(), alexnet)
    classifier_cfg = str(root / 'resnet18_toy.py')
    with open(classifier_cfg, 'w') as f:
        f.write(CLASSIFIER_CFG)
    from mmpretrain.apis import init_model
    classifier = str(root / 'resnet18_toy.pth')
    torch.save(init_model(classifier_cfg).state_dict(), classifier)
    return dict(inception=inception, alexnet=alexnet,
                classifier_cfg=classifier_cfg, classifier=classifier)


def test_metrics_end_to_end_in_multi_test_loop(tiny_cfg, toy_root, weights,
                                               tmp_path):
    cfg = tiny_cfg.copy()
    cfg.model.num_sampling_steps = 4
    cfg.test_dataloader = toy_test_dataloader(toy_root)
    cfg.test_evaluator = dict(type='Evaluator', metrics=[
        dict(type='ConditionalFID', fake_nums=8,
             inception_path=weights['inception'],
             inception_pkl=str(tmp_path / 'real_stats.pkl')),
        dict(type='LPIPSDiversity', fake_nums=8, samples_per_class=2,
             backbone_path=weights['alexnet']),
        dict(type='ClassifierFidelity', fake_nums=8,
             classifier_config=weights['classifier_cfg'],
             classifier_checkpoint=weights['classifier']),
    ])
    cfg.test_cfg = dict(type='MultiTestLoop')
    config = str(tmp_path / 'eval_cfg.py')
    cfg.dump(config)

    # A checkpoint to evaluate: two training iterations of the tiny config.
    train = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/train.py'), config,
         '--cfg-options', 'train_cfg.max_iters=2'],
        capture_output=True, text=True)
    assert train.returncode == 0, train.stderr[-3000:]
    ckpt = osp.join(cfg.work_dir, 'iter_2.pth')

    work_dir = str(tmp_path / 'eval')
    result = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/test.py'), config, ckpt,
         '--work-dir', work_dir], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(osp.join(work_dir, 'metrics.json')) as f:
        metrics = json.load(f)
    fid = [v for k, v in metrics.items() if k.startswith('FID') and
           k.endswith('fid')]
    assert len(fid) == 1 and fid[0] >= 0
    assert metrics['LPIPS/diversity'] > 0
    assert 0 <= metrics['Fidelity/subclass_top1'] <= 1
    assert metrics['Fidelity/subclass_top1'] <= metrics[
        'Fidelity/superclass_top1'] <= 1
    # Real-image statistics are cached for the next run.
    assert osp.isfile(tmp_path / 'real_stats.pkl')

    # The same evaluation split over two processes (gloo), gathered.
    work_dir = str(tmp_path / 'eval_2')
    result = subprocess.run(
        ['bash', osp.join(REPO, 'tools/dist_test.sh'), config, ckpt, '2',
         '--work-dir', work_dir], capture_output=True, text=True,
        env=dict(os.environ, PORT=free_port()))
    assert result.returncode == 0, result.stderr[-3000:]
    with open(osp.join(work_dir, 'metrics.json')) as f:
        assert sorted(json.load(f)) == sorted(metrics)


def test_missing_weights_name_the_file_and_where(tmp_path):
    missing = str(tmp_path / 'nowhere' / 'inception-2015-12-05.pt')
    with pytest.raises(FileNotFoundError,
                       match=r'inception-2015-12-05\.pt not found at .*'
                       r'nowhere.*inception_path=PATH'):
        ConditionalFID(fake_nums=8, inception_path=missing)
    with pytest.raises(FileNotFoundError, match=r'alexnet-owt-7be5be79\.pth'
                       r'.*backbone_path=PATH'):
        LPIPSDiversity(fake_nums=8,
                       backbone_path=str(tmp_path / 'alexnet-owt-7be5be79.pth'))
