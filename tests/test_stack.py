"""The OpenMMLab stack itself: compiled mmcv ops and the whole MMagic toolbox."""
import subprocess
import sys

import torch


def test_mmcv_ops_are_compiled():
    from mmcv.ops import nms

    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.],
                          [20., 20., 30., 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    _, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]


def test_plain_mmagic_import_in_a_fresh_interpreter():
    """What a user types first, with nothing of ours imported by hand."""
    code = ('import mmagic.models, mmagic.datasets, mmagic.evaluation, '
            'mmagic.engine, mmpretrain.models; print("ok")')
    result = subprocess.run([sys.executable, '-c', code],
                            capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith('ok')


def test_register_all_modules():
    from mmagic.registry import METRICS, MODELS
    from mmagic.utils import register_all_modules

    register_all_modules()
    assert MODELS.get('DenoisingUnet') is not None
    assert METRICS.get('FrechetInceptionDistance') is not None
