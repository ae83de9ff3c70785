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


def test_sqrtm_accepts_disp_as_mmagic_fid_calls_it():
    import numpy as np
    import scipy.linalg

    from finediffusion.compat.scipy_sqrtm import sqrtm_accepting_disp

    a = np.array([[4.0, 1.0], [1.0, 3.0]])
    # scipy >= 1.18's sqrtm takes no disp; wrapped as the compat module does.
    without_disp = sqrtm_accepting_disp(lambda x: scipy.linalg.sqrtm(x))
    for sqrtm in (scipy.linalg.sqrtm, without_disp):
        root, error = sqrtm(a, disp=False)
        assert np.allclose(root @ root, a) and error < 1e-10
    assert np.allclose(without_disp(a), scipy.linalg.sqrtm(a))
