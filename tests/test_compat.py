"""finediffusion.compat: each fix of the pinned OpenMMLab stack, through the
MMagic, mmpretrain and MMEngine code that needs it, and the import hook that
applies them."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from finediffusion.compat import FIXES


def run_python(code: str) -> str:
    """Runs ``code`` in a fresh interpreter of this environment; its stdout."""
    result = subprocess.run([sys.executable, '-c', code],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip()


def test_interpreter_start_imports_no_heavy_module():
    """The .pth line installs the finder only: numpy, torch, scipy and
    MMEngine load when something imports them (``python -c pass`` then
    costs what the bare interpreter does; benchmarks/interpreter_start.py
    measures it)."""
    out = run_python(
        'import sys; '
        "print([m for m in ('numpy', 'torch', 'scipy', 'mmengine') "
        'if m in sys.modules], '
        "any(getattr(f, 'fixes_imports', False) for f in sys.meta_path))")
    assert out == '[] True'


def test_fixes_apply_when_their_module_is_imported():
    out = run_python(
        'import sys; import numpy as np; '
        "print(hasattr(np, 'in1d')); import mmengine; "
        "print(hasattr(np, 'in1d'), hasattr(np, 'bool8'))")
    assert out.split() == ['False', 'True', 'True']


def test_fixes_apply_to_modules_imported_before_the_finder():
    """An environment without the .pth line (``import finediffusion`` late,
    after MMEngine): installing the finder fixes what is loaded."""
    out = run_python(
        'import sys; '
        "sys.meta_path[:] = [f for f in sys.meta_path "
        "if not getattr(f, 'fixes_imports', False)]; "
        'import numpy as np, mmengine; '
        "print(hasattr(np, 'in1d')); "
        "sys.modules['finediffusion.compat'].install(); "
        "print(hasattr(np, 'in1d'))")
    assert out.split() == ['False', 'True']


def test_every_fix_names_an_existing_function():
    from finediffusion.compat import _fix
    for name in FIXES:
        assert callable(_fix(name)), name


def test_numpy_names_removed_in_2_4():
    x = np.array([[1, 5], [3, 7]])
    assert np.array_equal(np.in1d(x, [3, 5]), np.isin(x.ravel(), [3, 5]))
    data = np.arange(10.)
    for method in ('lower', 'higher'):
        assert np.percentile(data, 33, interpolation=method) == \
            np.percentile(data, 33, method=method)
    with pytest.raises(TypeError, match='same argument'):
        np.percentile(data, 33, interpolation='lower', method='lower')


def test_mmpretrain_retrieval_metric_uses_in1d():
    from mmpretrain.evaluation.metrics import RetrievalRecall
    pred = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.2, 0.7]])
    target = [torch.tensor([0]), torch.tensor([0])]
    recall = RetrievalRecall.calculate(pred, target, topk=(1, 2),
                                       target_indices=True)
    assert [float(r) for r in recall] == [50.0, 50.0]


def test_int_betas_of_mmagic_gan_configs_build():
    """MMagic's StyleGAN2 configs write betas=(0, 0.99 ** r): current torch
    refuses the int 0; the optimizer gets floats."""
    from mmengine.optim import build_optim_wrapper
    model = nn.Linear(2, 2)
    wrapper = build_optim_wrapper(model, dict(
        optimizer=dict(type='Adam', lr=1e-3, betas=(0, 0.99**2))))
    assert wrapper.optimizer.param_groups[0]['betas'] == (0.0, 0.99**2)
    with pytest.raises(ValueError, match='betas'):
        torch.optim.Adam(model.parameters(), betas=(0, 0.99))


def test_reduce_lr_state_loads_weights_only(tmp_path):
    """MMagic's ReduceLR pickled its MessageHub: resuming was impossible
    under torch's weights-only loading."""
    from mmengine.logging import MessageHub

    from mmagic.engine.schedulers import ReduceLR
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0)
    scheduler = ReduceLR(optimizer, patience=0, factor=0.5)
    hub = MessageHub.get_instance('reduce_lr')
    for value in (3.0, 4.0):
        hub.update_scalar('value', value)
        scheduler.step()
    torch.save(scheduler.state_dict(), tmp_path / 'state.pth')
    state = torch.load(tmp_path / 'state.pth', weights_only=True)
    resumed = ReduceLR(torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0),
                       patience=0, factor=0.5)
    resumed.load_state_dict(state)
    assert resumed.best == scheduler.best == 3.0
    assert resumed.last_step == scheduler.last_step
    assert resumed.message_hub is hub


def _mmagic_model(family: str, name: str):
    """The model of one of MMagic's shipped configs (random weights)."""
    from mmengine.hub import get_config

    from mmagic.registry import MODELS
    cfg = get_config(f'mmagic::{family}/{name}')
    return MODELS.build(cfg.model)


@pytest.mark.parametrize('family,name', [
    ('dcgan', 'dcgan_1xb128-300kiters_celeba-cropped-64.py'),
    ('lsgan', 'lsgan_dcgan-archi_lr1e-3-1xb128-12Mimgs_celeba-cropped-64x64.py'),
])
def test_dcgan_discriminators_initialise_as_the_runner_calls_them(
        family, name):
    torch.manual_seed(0)
    model = _mmagic_model(family, name)
    model.init_weights()  # what Runner.__init__ calls
    convs = [m for m in model.discriminator.modules()
             if isinstance(m, nn.Conv2d)]
    weights = torch.cat([c.weight.flatten() for c in convs])
    assert abs(weights.std().item() - 0.02) < 0.002
    norms = [m for m in model.discriminator.modules()
             if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(not n.bias.any() for n in norms)


def test_generation_init_weights_under_the_runner_draws_mmagic_values():
    from mmengine.model import BaseModule

    from mmagic.models.editors.pix2pix import UnetGenerator
    from mmagic.models.utils import model_utils

    class Wrapper(BaseModule):

        def __init__(self):
            super().__init__()
            self.net = UnetGenerator(3, 3, num_down=5)

    torch.manual_seed(0)
    wrapped = Wrapper()
    torch.manual_seed(1)
    wrapped.init_weights()  # raised UnboundLocalError: init_info
    torch.manual_seed(0)
    alone = Wrapper().net
    torch.manual_seed(1)
    alone.init_weights()  # no records: MMagic's own code path
    for a, b in zip(wrapped.net.state_dict().values(),
                    alone.state_dict().values()):
        assert torch.equal(a, b)
    assert model_utils.generation_init_weights.records_once


def test_fixed_noise_injection_runs_off_cuda_and_keeps_the_global_rng():
    from mmagic.models.editors.stylegan1.stylegan1_modules import \
        NoiseInjection
    injection = NoiseInjection(fixed_noise=True)
    torch.manual_seed(1024)
    expected = torch.randn(2, 1, 4, 4)
    torch.manual_seed(5)
    _, noise = injection(torch.zeros(2, 3, 4, 4), return_noise=True)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(noise, expected) and torch.equal(after, torch.rand(3))


def test_conditional_metric_samples_carry_dataset_labels(tmp_path):
    """need_cond_input=True: each requested sample's label is the label of
    a dataset image (MMagic built an uninitialised tensor of that size)."""
    from test_evaluation import FakeInception
    from torch.utils.data import DataLoader

    from mmagic.evaluation import FrechetInceptionDistance
    path = str(tmp_path / 'inception.pt')
    torch.jit.script(FakeInception().requires_grad_(False)).save(path)

    class Labels:

        def __len__(self):
            return 6

        def get_data_info(self, index):
            return dict(gt_label=index % 3)  # an int, as MMagic's datasets

    metric = FrechetInceptionDistance(
        fake_nums=4, need_cond_input=True, inception_style='StyleGAN',
        inception_path=path)
    loader = DataLoader(Labels(), batch_size=4)
    np.random.seed(0)
    expected = [np.random.randint(6) % 3 for _ in range(4)]
    np.random.seed(0)
    request = next(iter(metric.get_metric_sampler(None, loader, [metric])))
    labels = [s.gt_label.label.tolist() for s in request['data_samples']]
    assert labels == [[label] for label in expected]


def test_video_compression_with_the_pinned_pyav():
    """PyAV >= 14 refuses MMagic's frame.pict_type = 'NONE' (the lock pins
    13)."""
    from mmagic.datasets.transforms import RandomVideoCompression
    transform = RandomVideoCompression(
        params=dict(codec=['libx264'], codec_prob=[1.0], bitrate=[1e4, 1e5]),
        keys=['lq'])
    frames = [np.random.rand(32, 32, 3).astype(np.float32) for _ in range(3)]
    out = transform({'lq': frames})
    assert len(out['lq']) == 3 and out['lq'][0].shape == (32, 32, 3)


def test_mmagic_apis_and_optional_runtime_modules_import():
    out = run_python(
        'import mmagic.apis; from mmagic.apis import MMagicInferencer; '
        'from mmagic.datasets.transforms import generate_assistant as g; '
        'print(MMagicInferencer.__name__, g.has_face_alignment)')
    assert out.splitlines()[-1] == 'MMagicInferencer True'


def test_psnr_keeps_numpy_1_precision():
    """MMagic's own test value (numpy 2 alone gives 48.130806)."""
    from mmagic.evaluation.metrics import PSNR
    from mmagic.evaluation.metrics.psnr import psnr
    value = psnr(np.ones((32, 32)), 2 * np.ones((32, 32)), crop_border=0)
    assert round(value, 7) == 48.1308036 and value.dtype == np.float64
    value = psnr(np.ones((32, 32, 3)), 2 * np.ones((32, 32, 3)),
                 crop_border=0, convert_to='Y')
    assert round(value, 7) == 49.4527218
    metric = PSNR()
    metric.process([], [dict(output=dict(pred_img=torch.ones(3, 8, 8)),
                             gt_img=2 * torch.ones(3, 8, 8))])
    assert round(metric.results[0]['PSNR'], 7) == 48.1308036
