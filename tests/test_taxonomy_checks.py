"""Every second taxonomy that meets the model's is compared with it: the
test and validation data, a checkpoint's and a delta's saved taxonomy, at
the start of tools/test.py, tools/sample.py and training, through the
users' iNat config on small iNat-format files."""
import json
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest
from mmengine.config import Config
from mmengine.runner import Runner

import probes  # noqa: F401  (the probe metric, for in-process runners)
from conftest import REPO, free_port
from finediffusion.datasets.latent_cache import cache_latents
from finediffusion.inference import load_for_sampling
from finediffusion.delta import export_delta
from mmagic.registry import DATASETS, MODELS
from test_datasets import CATEGORIES, category, inat_json

# Two species share a common name, as real ones do.
SPECIES = CATEGORIES + [
    category(3, 'Vanessa virginiensis', 'Painted Lady', 'Insects',
             'Nymphalidae')
]
ENV = dict(os.environ, PYTHONPATH=osp.join(REPO, 'tests') + os.pathsep +
           os.environ.get('PYTHONPATH', ''))


def moved(categories, name, supercategory):
    """The categories with species ``name`` in another supercategory."""
    return [dict(c, supercategory=supercategory) if c['name'] == name else c
            for c in categories]


def inat_config(root, vae_folder, work_dir, val_file='val.json',
                model_root=None, name='finediffusion_inat.py'):
    """configs/finediffusion_inat.py (or ``name``, which inherits it) on the
    iNat-format files in ``root``:
    a tiny DiT without pretrained weights (so trained in full), the tiny
    stand-in SD-VAE, 16 px images and a probe metric that needs no
    downloaded weights."""
    cfg = Config.fromfile(osp.join(REPO, 'configs', name))
    backbone = cfg.model.backbone
    backbone.arch = dict(depth=1, hidden_size=32, num_heads=2)
    backbone.input_size = 8
    backbone.pretrained = None
    # Without base weights every tensor trains, so that the checkpoints and
    # deltas hold them all (PEFT weights need their base to be loaded).
    cfg.model.trainable = 'full'
    if 'data_root' in backbone.taxonomy:
        backbone.taxonomy.data_root = str(model_root or root)
    cfg.model.vae.from_pretrained = vae_folder
    cfg.model.num_sampling_steps = 2
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg[loader]
        loader.update(batch_size=2, num_workers=0, persistent_workers=False)
        if 'data_root' in loader.dataset:
            loader.dataset.data_root = str(root)
        for step in loader.dataset.pipeline:
            if step['type'] == 'ADMCenterCrop':
                step['size'] = 16
    if 'data_root' in cfg.train_dataloader.dataset:
        cfg.train_dataloader.dataset.data_root = str(model_root or root)
    for loader in ('val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.ann_file = val_file
    probe = dict(type='Evaluator',
                 metrics=[dict(type='GeneratedLabelsProbe', fake_nums=4)])
    cfg.val_evaluator = cfg.test_evaluator = probe
    cfg.train_cfg.max_iters = 1
    cfg.default_hooks.checkpoint.interval = 1
    cfg.custom_imports = dict(imports=['finediffusion', 'probes'],
                              allow_failed_imports=False)
    cfg.work_dir = str(work_dir)
    return cfg


def dump(cfg, path):
    cfg.dump(str(path))
    return str(path)


def tool(name, *args):
    return subprocess.run([sys.executable, osp.join(REPO, 'tools', name),
                           *map(str, args)], capture_output=True, text=True,
                          env=ENV)


@pytest.fixture(scope='module')
def trained(tmp_path_factory, vae_folder):
    """iNat-format files (train_mini.json, val.json) and a one-iteration
    checkpoint of the iNat config on them."""
    root = tmp_path_factory.mktemp('inat')
    inat_json(root, SPECIES)
    inat_json(root, SPECIES, name='val.json')
    cfg = inat_config(root, vae_folder, root / 'work')
    Runner.from_cfg(cfg).train()
    return root, str(root / 'work' / 'iter_1.pth')


def write_val_moved(root):
    """val_moved.json: val.json with Vanessa cardui among the Birds, as in
    no train_mini.json."""
    with open(root / 'val.json') as f:
        data = json.load(f)
    data['categories'] = moved(SPECIES, 'Vanessa cardui', 'Birds')
    with open(root / 'val_moved.json', 'w') as f:
        json.dump(data, f)


def assert_names_the_move(stderr, *files):
    # The species, its supercategory on both sides and the files.
    message = stderr.strip().splitlines()[-1]
    assert 'Vanessa cardui' in message, stderr[-3000:]
    assert "'Insects'" in message and "'Birds'" in message, message
    for name in files:
        assert name in message, message


def test_consistent_test_set_passes_the_check(trained, vae_folder, tmp_path):
    root, ckpt = trained
    config = dump(inat_config(root, vae_folder, tmp_path / 'work'),
                  tmp_path / 'cfg.py')
    run = tool('test.py', config, ckpt, '--work-dir', tmp_path / 'eval')
    assert run.returncode == 0, run.stderr[-3000:]
    with open(tmp_path / 'eval' / 'metrics.json') as f:
        assert json.load(f)['Probe/images'] == 4


def test_test_set_with_a_species_moved_is_refused(trained, vae_folder,
                                                  tmp_path):
    root, ckpt = trained
    write_val_moved(root)
    cfg = inat_config(root, vae_folder, tmp_path / 'work',
                      val_file='val_moved.json')
    config = dump(cfg, tmp_path / 'cfg.py')
    run = tool('test.py', config, ckpt, '--work-dir', tmp_path / 'eval')
    assert run.returncode != 0
    assert_names_the_move(run.stderr, 'val_moved.json', 'train_mini.json')
    assert not osp.exists(tmp_path / 'eval' / 'metrics.json')
    # The same over two processes (gloo): every rank checks.
    run = subprocess.run(
        ['bash', osp.join(REPO, 'tools/dist_test.sh'), config, ckpt, '2',
         '--work-dir', str(tmp_path / 'eval')], capture_output=True,
        text=True, env=dict(ENV, PORT=free_port()))
    assert run.returncode != 0
    assert ("subclass 'Vanessa cardui' (id 1) belongs to superclass "
            "'Insects' (id 1)") in run.stderr, run.stderr[-3000:]
    assert not osp.exists(tmp_path / 'eval' / 'metrics.json')

    # Validation during training: refused before the first iteration.
    cfg.train_cfg.val_interval = 1
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match='Vanessa cardui') as error:
        runner.train()
    assert 'val_dataloader' in str(error.value)
    assert runner.iter == 0


def test_weights_of_another_taxonomy_are_refused(trained, vae_folder,
                                                 tmp_path):
    """A checkpoint or delta trained where Vanessa cardui was an insect,
    with a config whose train_mini.json now files it among the birds."""
    root, ckpt = trained
    other = tmp_path / 'inat_now'
    inat_json(other, moved(SPECIES, 'Vanessa cardui', 'Birds'))
    shutil.copy(other / 'train_mini.json', other / 'val.json')
    config = dump(inat_config(other, vae_folder, tmp_path / 'work'),
                  tmp_path / 'cfg.py')
    delta = str(tmp_path / 'delta.safetensors')
    export_delta(ckpt, delta)

    for weights in (ckpt, delta):
        run = tool('test.py', config, weights, '--work-dir',
                   tmp_path / 'eval')
        assert run.returncode != 0
        assert_names_the_move(run.stderr, osp.basename(weights),
                              str(other / 'train_mini.json'))
    run = tool('sample.py', config, delta, '--classes', '0', '-n', '1',
               '--steps', '2', '--out', tmp_path / 'samples')
    assert run.returncode != 0
    assert_names_the_move(run.stderr, 'delta.safetensors',
                          str(other / 'train_mini.json'))
    assert not osp.exists(tmp_path / 'samples')
    with pytest.raises(ValueError, match='Vanessa cardui.*iter_1.pth'):
        load_for_sampling(config, ckpt)


def test_sample_refuses_a_name_of_two_species(trained, vae_folder, tmp_path):
    """'Painted Lady' is the common name of Vanessa cardui and of Vanessa
    virginiensis: sampling either silently would be a guess."""
    root, ckpt = trained
    config = dump(inat_config(root, vae_folder, tmp_path / 'work'),
                  tmp_path / 'cfg.py')
    run = tool('sample.py', config, ckpt, '--classes', 'painted lady', '-n',
               '1', '--steps', '2', '--out', tmp_path / 'samples')
    assert run.returncode != 0
    message = run.stderr.strip().splitlines()[-1]
    assert "'painted lady' is ambiguous" in message, run.stderr[-3000:]
    assert 'subclass id 1 (Vanessa cardui (Painted Lady)' in message
    assert 'subclass id 3 (Vanessa virginiensis (Painted Lady)' in message
    assert not osp.exists(tmp_path / 'samples')


def test_latent_cache_of_another_taxonomy_is_refused(trained, vae_folder,
                                                     tmp_path):
    root, _ = trained
    write_val_moved(root)
    image_cfg = inat_config(root, vae_folder, tmp_path / 'work')
    dataset = image_cfg.train_dataloader.dataset.copy()
    dataset.pipeline = [t for t in dataset.pipeline if t['type'] != 'Flip']
    vae = MODELS.build(image_cfg.model.vae).eval()

    def encode(images):
        posterior = vae.encode(images).latent_dist
        return posterior.mean, posterior.std

    cache = str(tmp_path / 'latents')
    cache_latents(DATASETS.build(dataset), encode, cache, {}, progress=False)

    # configs/finediffusion_inat_latents.py: the model reads the cache's
    # taxonomy, the validation data another.
    cfg = inat_config(root, vae_folder, tmp_path / 'work',
                      val_file='val_moved.json',
                      name='finediffusion_inat_latents.py')
    cfg.model.backbone.taxonomy.cache_dir = cache
    cfg.train_dataloader.dataset.cache_dir = cache
    cfg.train_cfg.val_interval = 1
    with pytest.raises(ValueError, match=r"'Vanessa cardui' \(id 1\) belongs "
                       r"to superclass 'Insects' \(id 1\) in the model's "
                       r'taxonomy LatentDataset\(.*latents\) but to '
                       r"superclass 'Birds' \(id 0\) in the val_dataloader "
                       r'dataset INat2021Dataset\(.*val_moved.json\)'):
        Runner.from_cfg(cfg).train()

    # The cache as training data of a model whose train_mini.json has
    # moved the species since.
    other = tmp_path / 'inat_now'
    inat_json(other, moved(SPECIES, 'Vanessa cardui', 'Birds'))
    cfg = inat_config(root, vae_folder, tmp_path / 'work', model_root=other)
    latents = Config.fromfile(
        osp.join(REPO, 'configs', 'finediffusion_inat_latents.py'))
    cfg.train_dataloader.dataset = latents.train_dataloader.dataset
    cfg.train_dataloader.dataset.cache_dir = cache
    with pytest.raises(ValueError, match=r"'Vanessa cardui' .* in the "
                       r'train_dataloader dataset LatentDataset\(.*latents/'
                       r'manifest.json\)'):
        Runner.from_cfg(cfg).train()
