"""Channel order from loader to model to metrics, files and classifiers.

A perfect generator (``probes.PerfectGenerator``: FineDiffusion returning
the training images of the requested classes, as its data preprocessor
hands them to the model) is scored through ``tools/test.py`` with configs
inheriting the shipped ones. Its FID, LPIPS diversity and classifier
fidelity must equal the same measures computed here, from the published
equations, on the real images it returned (read as RGB by PIL); the same
measures on channel-swapped images differ clearly, so a swap anywhere on
the way fails. Weights that cannot be downloaded are stand-ins made here.
"""
import glob
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from mmengine.config import Config
from PIL import Image
from scipy import linalg

from conftest import REPO
from finediffusion.evaluation.lpips_diversity import build_lpips
from mmagic.registry import MODELS

# Subclass colours (RGB) and superclasses. Red exceeds blue in each, so no
# colour's channel swap is another class's colour.
COLOURS = [(220, 20, 30), (230, 120, 20), (210, 190, 40), (225, 90, 150)]
SUB2SUPER = [0, 0, 1, 1]
NAMES = ['red', 'orange', 'yellow', 'pink']
FID_STEPS, LPIPS_STEPS = 1, 2  # tells the metrics' requests apart
FAKES = 32  # one request batch of the shipped test loaders

CLASSIFIER_CFG = """
custom_imports = dict(imports=['probes'], allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(num_classes=4, mean=[127.5] * 3, std=[127.5] * 3,
                           to_rgb=True),
    backbone=dict(type='MeanColour'),
    head=dict(type='LinearClsHead', num_classes=4, in_channels=3,
              loss=dict(type='CrossEntropyLoss')))
"""


class SmallInception(torch.nn.Module):
    """TorchScript stand-in with the interface of StyleGAN's Inception
    (uint8 RGB images in, features out); six features, so that the
    covariances of a few dozen images are of full rank."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)

    def forward(self, img: torch.Tensor, return_features: bool = False):
        x = torch.tanh(self.conv(img.float() / 255 - 0.5) * 4)
        return x.mean(dim=(2, 3))


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp('weights')
    torch.manual_seed(0)
    inception = str(root / 'inception.pt')
    torch.jit.script(SmallInception().requires_grad_(False)).save(inception)
    alexnet = str(root / 'alexnet-owt-7be5be79.pth')
    torch.save(torchvision.models.alexnet().state_dict(), alexnet)
    classifier_cfg = str(root / 'colour_classifier.py')
    with open(classifier_cfg, 'w') as f:
        f.write(CLASSIFIER_CFG)
    from mmpretrain.apis import init_model
    model = init_model(classifier_cfg)
    # Nearest class colour in the classifier's input space (RGB in
    # [-1, 1]): logit_k = <x, c_k> - |c_k|^2 / 2.
    centres = torch.tensor(COLOURS, dtype=torch.float32) / 127.5 - 1
    model.head.fc.weight.data.copy_(centres)
    model.head.fc.bias.data.copy_(-0.5 * (centres**2).sum(1))
    classifier = str(root / 'colour_classifier.pth')
    torch.save(model.state_dict(), classifier)
    return dict(inception=inception, alexnet=alexnet,
                classifier_cfg=classifier_cfg, classifier=classifier)


def class_images(colour, size):
    """Two images of a class: plain, and with a black centre square (both
    symmetric under the training pipelines' horizontal flip)."""
    plain = np.empty((size, size, 3), np.uint8)
    plain[:] = colour
    framed = plain.copy()
    framed[size // 4:size - size // 4, size // 4:size - size // 4] = 0
    return [plain, framed]


def write_images(root, size, folder):
    """``root/<folder(sub)>/<k>.png``; returns (relative path, sub) pairs."""
    pairs = []
    for sub, colour in enumerate(COLOURS):
        os.makedirs(osp.join(root, folder(sub)), exist_ok=True)
        for k, image in enumerate(class_images(colour, size)):
            path = osp.join(folder(sub), f'{k}.png')
            Image.fromarray(image).save(osp.join(root, path))
            pairs.append((path, sub))
    return pairs


def write_inat(root):
    """iNat 2021 files: train_mini.json and val.json over the same images
    (256 px, the shipped crop size, so the crop keeps every pixel)."""
    pairs = write_images(root, 256, lambda sub: f'train_mini/{sub:05d}')
    data = dict(
        categories=[dict(id=sub, name=NAMES[sub],
                         supercategory=f'super{SUB2SUPER[sub]}')
                    for sub in range(len(COLOURS))],
        images=[dict(id=i, file_name=path)
                for i, (path, _) in enumerate(pairs)],
        annotations=[dict(id=i, image_id=i, category_id=sub)
                     for i, (_, sub) in enumerate(pairs)])
    for name in ('train_mini.json', 'val.json'):
        with open(osp.join(root, name), 'w') as f:
            json.dump(data, f)
    return [osp.join(root, path) for path, _ in pairs]


def write_vegfru(root):
    """VegFru lists for the train and test splits over the same images."""
    pairs = write_images(root, 256,
                         lambda sub: f'veg200_images/{NAMES[sub]}')
    os.makedirs(osp.join(root, 'vegfru_list'))
    for split in ('train', 'test'):
        for prefix, label in (('vegfru', lambda s: s),
                              ('supvegfru', lambda s: SUB2SUPER[s])):
            path = osp.join(root, 'vegfru_list', f'{prefix}_{split}.txt')
            with open(path, 'w') as f:
                f.writelines(f'{p} {label(s)}\n' for p, s in pairs)
    return [osp.join(root, path) for path, _ in pairs]


def write_folders(root):
    """Class folders for the tiny config (BasicConditionalDataset; its
    sub2super is [0, 0, 1, 1]), 64 px, LPIPS's smallest side."""
    pairs = write_images(root, 64, lambda sub: f'{sub:02d}_{NAMES[sub]}')
    return [osp.join(root, path) for path, _ in pairs]


def evaluator(weights, tmp_path):
    return dict(type='Evaluator', metrics=[
        dict(type='ConditionalFID', fake_nums=FAKES,
             inception_path=weights['inception'],
             inception_pkl=str(tmp_path / 'real_stats.pkl'),
             sample_kwargs=dict(num_sampling_steps=FID_STEPS)),
        dict(type='ClassifierFidelity', fake_nums=FAKES,
             classifier_config=weights['classifier_cfg'],
             classifier_checkpoint=weights['classifier'],
             sample_kwargs=dict(num_sampling_steps=FID_STEPS)),
        dict(type='LPIPSDiversity', fake_nums=16, samples_per_class=2,
             backbone_path=weights['alexnet'],
             sample_kwargs=dict(num_sampling_steps=LPIPS_STEPS)),
    ])


def shipped_config(shipped, taxonomy, test_dataset, record, metrics):
    """A config inheriting a shipped iNat/VegFru config: data paths to the
    test's files, the model a perfect generator over its train pipeline."""
    return f"""
_base_ = ['{osp.join(REPO, 'configs', shipped)}']
custom_imports = dict(imports=['finediffusion', 'probes'],
                      allow_failed_imports=False)
taxonomy = {taxonomy!r}
train_dataloader = dict(dataset=dict(**taxonomy))
test_dataloader = dict(num_workers=0, dataset=dict({test_dataset!r}))
model = dict(
    _delete_=True,
    type='PerfectGenerator',
    dataset=dict(**taxonomy, pipeline={{{{_base_.train_pipeline}}}}),
    record={record!r},
    backbone=dict(type='TieredDiT', taxonomy=taxonomy,
                  arch=dict(depth=1, hidden_size=32, num_heads=2),
                  patch_size=4, input_size=16, in_channels=3),
    trainable='full',
    ema_decay=None)
test_evaluator = {metrics!r}
"""


def tiny_config(root, record, metrics):
    """The tiny CPU config (MMagic's BGR LoadImageFromFile), its model a
    perfect generator over its train pipeline."""
    return f"""
_base_ = ['{osp.join(REPO, 'configs', 'finediffusion_tiny_cpu.py')}']
custom_imports = dict(imports=['finediffusion', 'probes'],
                      allow_failed_imports=False)
train_dataloader = dict(dataset=dict(data_root={root!r}))
model = dict(
    type='PerfectGenerator',
    dataset=dict(type='BasicConditionalDataset', data_root={root!r},
                 pipeline={{{{_base_.train_pipeline}}}}),
    record={record!r},
    ema_decay=None)
test_dataloader = dict(
    batch_size={FAKES}, num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='BasicConditionalDataset', data_root={root!r},
                 pipeline=[dict(type='LoadImageFromFile', key='gt'),
                           dict(type='PackInputs')]))
test_cfg = dict(type='MultiTestLoop')
test_evaluator = {metrics!r}
"""


def env():
    return dict(os.environ, PYTHONPATH=osp.join(REPO, 'tests') + os.pathsep +
                os.environ.get('PYTHONPATH', ''))


def save_checkpoint(config, path):
    """The perfect generator's weights (unused by its sampling) as a
    checkpoint for the tools."""
    cfg = Config.fromfile(config)
    model = MODELS.build(cfg.model)
    torch.save(dict(state_dict=model.state_dict(), meta={}), path)


def rgb(paths):
    """Images as PIL reads them: uint8 RGB, (N, 3, H, W)."""
    return torch.from_numpy(np.stack(
        [np.array(Image.open(p).convert('RGB')) for p in paths])).permute(
            0, 3, 1, 2)


def frechet_distance(fake, real):
    """d^2 = |mu_f - mu_r|^2 + Tr(S_f + S_r - 2 (S_f S_r)^(1/2))."""
    mu_f, mu_r = fake.mean(0), real.mean(0)
    s_f, s_r = np.cov(fake, rowvar=False), np.cov(real, rowvar=False)
    root = linalg.sqrtm(s_f @ s_r).real
    return float(((mu_f - mu_r)**2).sum() +
                 np.trace(s_f + s_r - 2 * root))


def references(records, real_paths, weights, sub2super):
    """FID, LPIPS diversity and fidelity of the real images the generator
    returned, each also for those images with swapped channels."""
    fid_calls = [r for r in records if r['num_sampling_steps'] == FID_STEPS]
    lpips_calls = [r for r in records if r['num_sampling_steps'] == LPIPS_STEPS]
    fid_paths = sum((r['paths'] for r in fid_calls), [])[:FAKES]
    fid_labels = torch.tensor(sum((r['labels'] for r in fid_calls),
                                  [])[:FAKES])
    inception = torch.jit.load(weights['inception'])
    lpips = build_lpips(weights['alexnet'])
    from mmpretrain.apis import init_model
    classifier = init_model(weights['classifier_cfg'],
                            weights['classifier'])
    table = torch.tensor(sub2super)
    real = inception(rgb(real_paths)).numpy()
    out = {}
    for swap in (False, True):
        def load(paths):
            images = rgb(paths)
            return images.flip(1) if swap else images

        fakes = load(fid_paths)
        fid = frechet_distance(inception(fakes).numpy(), real)
        distances = []
        for call in lpips_calls:
            images = load(call['paths']).float() / 127.5 - 1
            for a, b in images.split(2):
                distances.append(lpips(a[None], b[None]).item())
        # mmpretrain classifiers take BGR (as OpenCV reads), to_rgb inside.
        data = classifier.data_preprocessor(
            dict(inputs=list(fakes.flip(1))), False)
        pred = classifier(data['inputs'], mode='tensor').argmax(1)
        out[swap] = {
            'FID/fid': fid,
            'LPIPS/diversity': float(np.mean(distances)),
            'Fidelity/subclass_top1': (pred == fid_labels).float().mean()
            .item(),
            'Fidelity/superclass_top1': (table[pred] == table[fid_labels])
            .float().mean().item(),
        }
    return out[False], out[True]


def run_test(config, tmp_path):
    ckpt = str(tmp_path / 'perfect.pth')
    save_checkpoint(config, ckpt)
    work_dir = str(tmp_path / 'eval')
    result = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/test.py'), config, ckpt,
         '--work-dir', work_dir], capture_output=True, text=True, env=env())
    assert result.returncode == 0, result.stderr[-3000:]
    with open(osp.join(work_dir, 'metrics.json')) as f:
        return json.load(f)


def assert_scored_as_real(metrics, records, real_paths, weights):
    right, swapped = references(records, real_paths, weights, SUB2SUPER)
    for key, value in right.items():
        # Each measure tells the swapped images apart from the real ones.
        assert abs(swapped[key] - value) > 0.05 * max(abs(value), 0.1), key
        assert metrics[key] == pytest.approx(value, rel=1e-3, abs=1e-4), (
            key, metrics[key], value, swapped[key])
    # A perfect generator's FID is near 0, a swapped one's is not.
    assert right['FID/fid'] < 0.05 * swapped['FID/fid']


def read_records(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize('shipped', ['finediffusion_inat.py',
                                     'finediffusion_vegfru.py'])
def test_perfect_generator_scores_as_real_images(shipped, weights,
                                                 tmp_path):
    root = str(tmp_path / 'data')
    if shipped == 'finediffusion_inat.py':
        real_paths = write_inat(root)
        taxonomy = dict(type='INat2021Dataset', data_root=root,
                        ann_file='train_mini.json',
                        super_rank='supercategory')
        test_dataset = dict(data_root=root)
    else:
        real_paths = write_vegfru(root)
        taxonomy = dict(type='VegFruDataset', data_root=root, split='train')
        test_dataset = dict(data_root=root)
    record = str(tmp_path / 'record.jsonl')
    config = str(tmp_path / 'perfect.py')
    with open(config, 'w') as f:
        f.write(shipped_config(shipped, taxonomy, test_dataset, record,
                               evaluator(weights, tmp_path)))
    metrics = run_test(config, tmp_path)
    assert_scored_as_real(metrics, read_records(record), real_paths,
                          weights)


def test_perfect_generator_scores_as_real_with_bgr_loader(weights, tmp_path):
    root = str(tmp_path / 'data')
    real_paths = write_folders(root)
    record = str(tmp_path / 'record.jsonl')
    config = str(tmp_path / 'perfect.py')
    with open(config, 'w') as f:
        f.write(tiny_config(root, record, evaluator(weights, tmp_path)))
    metrics = run_test(config, tmp_path)
    assert_scored_as_real(metrics, read_records(record), real_paths,
                          weights)


def test_sample_tool_writes_rgb_pngs_with_bgr_loader(tmp_path):
    """tools/sample.py with the tiny config (MMagic's BGR loader): each PNG
    is the training image the perfect generator returned, as on disk."""
    root = str(tmp_path / 'data')
    write_folders(root)
    record = str(tmp_path / 'record.jsonl')
    config = str(tmp_path / 'perfect.py')
    with open(config, 'w') as f:
        f.write(tiny_config(root, record, dict(type='Evaluator',
                                               metrics=[])))
    ckpt = str(tmp_path / 'perfect.pth')
    save_checkpoint(config, ckpt)
    out = str(tmp_path / 'samples')
    result = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/sample.py'), config, ckpt,
         '--classes', '0', '1', '2', '3', '-n', '2', '--device', 'cpu',
         '--out', out], capture_output=True, text=True, env=env())
    assert result.returncode == 0, result.stderr[-3000:]
    paths = read_records(record)[0]['paths']
    for index, path in enumerate(paths):
        sub, n = divmod(index, 2)
        png = glob.glob(osp.join(out, f'{sub}_*', f'{n}.png'))
        assert len(png) == 1
        written = np.array(Image.open(png[0]))
        real = np.array(Image.open(path).convert('RGB'))
        assert written[0, 0].tolist() == list(COLOURS[sub])
        assert np.array_equal(written, real), (png[0], path)


def test_visualizer_draws_generated_images_as_on_disk(tmp_path):
    """MMagic's Visualizer (what its VisualizationHook draws with) shows
    FineDiffusion.predict's fake_img in the colours of the files (iNat
    config, RGB loader)."""
    from mmagic.structures import DataSample
    from mmagic.visualization import Visualizer
    root = str(tmp_path / 'data')
    write_inat(root)
    taxonomy = dict(type='INat2021Dataset', data_root=root,
                    ann_file='train_mini.json', super_rank='supercategory')
    config = str(tmp_path / 'perfect.py')
    with open(config, 'w') as f:
        f.write(shipped_config('finediffusion_inat.py', taxonomy,
                               dict(data_root=root),
                               str(tmp_path / 'record.jsonl'),
                               dict(type='Evaluator', metrics=[])))
    model = MODELS.build(Config.fromfile(config).model)
    requests = []
    for sub in range(len(COLOURS)):
        request = DataSample()
        request.set_gt_label(torch.tensor([sub]))
        requests.append(request)
    fakes = model.test_step(dict(inputs=dict(sample_model='orig'),
                                 data_samples=requests))
    visualizer = Visualizer(vis_backends=[dict(type='VisBackend')],
                            save_dir=str(tmp_path / 'vis'))
    visualizer.add_datasample('fakes', gen_samples=fakes,
                              target_keys='fake_img', n_row=len(COLOURS))
    drawn, = glob.glob(str(tmp_path / 'vis' / '**' / '*.png'),
                       recursive=True)
    grid = np.array(Image.open(drawn).convert('RGB'))
    # Every class colour is drawn as it is in the files, and no other
    # colour but the black of the framed images and the padding.
    drawn_colours = {tuple(c) for c in grid.reshape(-1, 3).tolist()}
    assert drawn_colours - {(0, 0, 0), (255, 255, 255)} == set(COLOURS)
