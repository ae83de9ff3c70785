"""Class-name resolution and tools/sample.py, end to end on the CPU."""
import json
import os.path as osp
import subprocess
import sys
import unicodedata

import pytest
from PIL import Image

from conftest import REPO
from finediffusion.datasets import Taxonomy
from finediffusion.delta import export_delta

TAXONOMY = Taxonomy(
    names=['Danaus plexippus', 'Vanessa cardui', 'Turdus migratorius'],
    sub2super=[0, 0, 1],
    super_names=['Insecta', 'Aves'],
    common_names=['Monarch', 'Painted Lady', 'American Robin'])


@pytest.mark.parametrize('query,ids', [
    ('2', [2]),
    ('danaus PLEXIPPUS', [0]),
    ('painted lady', [1]),
    ('Insecta', [0, 1]),
])
def test_resolve(query, ids):
    assert TAXONOMY.resolve(query) == ids


def test_unknown_name_lists_the_closest():
    with pytest.raises(ValueError, match=r"'Danaus plexipus'.*closest.*"
                       r"Danaus plexippus"):
        TAXONOMY.resolve('Danaus plexipus')
    with pytest.raises(ValueError, match='out of range'):
        TAXONOMY.resolve('7')


def test_a_name_of_several_classes_is_ambiguous():
    # Common names repeat across species; a superclass may share a name
    # with a subclass of another one.
    taxonomy = Taxonomy(
        names=['Danaus plexippus', 'Vanessa cardui', 'Vanessa virginiensis',
               'Insecta'],
        sub2super=[0, 0, 0, 1], super_names=['Insecta', 'Aves'],
        common_names=['Monarch', 'Painted Lady', 'Painted Lady', ''])
    with pytest.raises(ValueError, match=r"'painted lady' is ambiguous: it "
                       r'names subclass id 1 \(Vanessa cardui .* and '
                       r'subclass id 2 \(Vanessa virginiensis'):
        taxonomy.resolve('painted lady')
    with pytest.raises(ValueError, match=r"'Insecta' is ambiguous: it names "
                       r"subclass id 3 .* and superclass 'Insecta' \(id 0, 3 "
                       r'subclasses\)'):
        taxonomy.resolve('Insecta')
    assert taxonomy.resolve('Vanessa cardui') == [1]


NUMBERED = Taxonomy(  # class folders 1, 2, 10, 11, in name (string) order
    names=['1', '10', '11', '2'], sub2super=[0, 0, 1, 1],
    super_names=['a', 'b'])


def test_a_number_that_is_also_a_name_is_refused():
    """Ids follow name order, so folder '2' is id 3 and id 2 is folder
    '11': '2' alone has two readings; id:N is always an id."""
    with pytest.raises(ValueError, match=r"class '2' is ambiguous: it names "
                       r'subclass id 2 \(11 / b\) and subclass id 3 '
                       r'\(2 / b\); give a subclass id as id:2 or id:3'):
        NUMBERED.resolve('2')
    assert NUMBERED.resolve('id:2') == [2]
    assert NUMBERED.resolve('id:3') == [3]
    assert NUMBERED.resolve('0') == [0]  # no class is named 0
    assert NUMBERED.resolve('10') == [1]  # id 10 does not exist
    with pytest.raises(ValueError, match='class id 7 is out of range'):
        NUMBERED.resolve('id:7')


def test_names_compare_after_unicode_normalisation():
    composed = Taxonomy(names=['Gallinago gallinago'], sub2super=[0],
                        super_names=['Oiseaux'],
                        common_names=['B\u00e9cassine des marais'])
    typed = unicodedata.normalize('NFD', 'b\u00e9cassine des MARAIS')
    assert typed != 'b\u00e9cassine des MARAIS'
    assert composed.resolve(typed) == [0]


@pytest.mark.parametrize('query', ['', '  '])
def test_an_empty_name_is_refused(query):
    # Subclasses without a common name have an empty one.
    with pytest.raises(ValueError, match='empty class name'):
        Taxonomy(names=['Danaus plexippus', 'Vanessa cardui'],
                 sub2super=[0, 0], super_names=['Insecta'],
                 common_names=['Monarch', '']).resolve(query)


@pytest.fixture(scope='module')
def trained(tmp_path_factory, toy_root):
    """A config and a two-iteration checkpoint of the tiny CPU run."""
    from mmengine.config import Config
    from conftest import TINY_CONFIG
    root = tmp_path_factory.mktemp('sampling')
    cfg = Config.fromfile(TINY_CONFIG)
    cfg.train_dataloader.dataset.data_root = toy_root
    cfg.work_dir = str(root / 'work')
    cfg.train_cfg.max_iters = 2
    cfg.default_hooks.checkpoint.interval = 2
    config = str(root / 'cfg.py')
    cfg.dump(config)
    run = subprocess.run([sys.executable, osp.join(REPO, 'tools/train.py'),
                          config], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return config, osp.join(cfg.work_dir, 'iter_2.pth'), root


def sample(config, weights, out, *classes, options=()):
    return subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/sample.py'), config, weights,
         '--classes', *classes, '-n', '2', '--steps', '3', '--out', out,
         *options], capture_output=True, text=True)


def test_sample_tool_writes_grid_and_files(trained):
    config, ckpt, root = trained
    delta = str(root / 'delta.safetensors')
    export_delta(ckpt, delta)
    for weights in (ckpt, delta):
        out = str(root / ('out_' + osp.splitext(osp.basename(weights))[1][1:]))
        # A superclass name expands to its subclasses, adjacent in the grid.
        run = sample(config, weights, out, 'superclass 1', '00_square_00')
        assert run.returncode == 0, run.stderr[-3000:]
        grid = Image.open(osp.join(out, 'grid.png'))
        assert grid.height == 3 * 64  # three rows, 16 px shown at 64
        for folder in ('2_01_disc_00', '3_01_disc_01', '0_00_square_00'):
            for n in range(2):
                assert osp.isfile(osp.join(out, folder, f'{n}.png'))


def test_sample_tool_refuses_more_steps_than_the_diffusion_has(trained):
    # Was a traceback from the sampler.
    config, ckpt, root = trained
    run = sample(config, ckpt, str(root / 'too_many'), '1',
                 options=('--steps', '2000', '--no-compile'))
    assert run.returncode == 1
    assert 'error: cannot take 2000 of 1000 steps' in run.stderr
    assert 'Traceback' not in run.stderr


def test_sample_tool_unknown_class(trained):
    config, ckpt, root = trained
    run = sample(config, ckpt, str(root / 'bad'), '01_disk_00')
    assert run.returncode != 0
    assert "closest: ['01_disc_00'" in run.stderr


def test_sample_tool_in_bf16_weights_is_close_to_float32(trained):
    """--precision bfloat16 (the GPU default) samples with bf16 weights (their
    dtype is checked in test_autocast.py): the images are those of float32
    up to bf16's rounding, and each batch's rate is printed."""
    import numpy as np
    config, ckpt, root = trained
    outs = {}
    for precision in ('float32', 'bfloat16'):
        out = str(root / f'out_{precision}')
        run = sample(config, ckpt, out, '1',
                     options=('--precision', precision, '--no-compile'))
        assert run.returncode == 0, run.stderr[-3000:]
        assert 'batch 1: 2 images,' in run.stderr + run.stdout
        outs[precision] = np.asarray(
            Image.open(osp.join(out, '1_00_square_01', '0.png')), np.int16)
    difference = np.abs(outs['float32'] - outs['bfloat16'])
    assert difference.max() <= 32 and difference.mean() < 4


def test_sample_tool_refuses_a_number_that_is_also_a_name(trained):
    """The weights' taxonomy names its classes by numbers (a delta of the
    tiny run, saved with the numbered folders' names)."""
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open
    config, ckpt, root = trained
    delta = str(root / 'numbered.safetensors')
    export_delta(ckpt, delta)
    with safe_open(delta, framework='pt') as f:
        meta = f.metadata()
    meta['taxonomy'] = json.dumps(NUMBERED.to_dict())
    save_file(load_file(delta), delta, metadata=meta)
    run = sample(config, delta, str(root / 'numbered'), '2')
    assert run.returncode == 1
    assert ("error: class '2' is ambiguous: it names subclass id 2 (11 / b) "
            'and subclass id 3 (2 / b)') in run.stderr
    assert not osp.exists(str(root / 'numbered'))
