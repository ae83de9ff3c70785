"""The rank features on the users' path: tools/sample.py and the
inferencer draw from any rank's row and guide from any rank, on a tiny
three-tier run trained through tools/train.py."""
import os
import os.path as osp
import subprocess
import sys

import pytest
from PIL import Image

from conftest import REPO


def sample(config, weights, out, *classes, options=()):
    return subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/sample.py'), config, weights,
         '--classes', *classes, '-n', '2', '--steps', '3', '--out', out,
         *options], capture_output=True, text=True)


def test_sample_tool_draws_rank_rows_with_hierarchical_guidance(
        ranked_run, tmp_path):
    config, ckpt, _ = ranked_run
    out = str(tmp_path / 'out')
    # A genus by name draws from its row, family:NAME from the family row
    # (the superclass rank), a species from its own.
    run = sample(config, ckpt, out, 'disc-g1', 'family:cross', 'id:5',
                 options=('--guidance', 'hierarchical', '--references',
                          'null', 'family', '--scales', '1', '2'))
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(os.listdir(out)) == [
        '5_cross_g1_hue092_plain', 'family_0_cross', 'genus_3_disc_g1',
        'grid.png'
    ]
    assert Image.open(osp.join(out, 'grid.png')).height == 3 * 64


@pytest.mark.parametrize('options, message', [
    (('--reference', 'genus'), "must run from coarse to fine and all be "
     "coarser than 'genus'"),
    (('--reference', 'order'), 'order'),
])
def test_sample_tool_refuses_a_reference_the_row_cannot_take(
        ranked_run, tmp_path, options, message):
    config, ckpt, _ = ranked_run
    out = str(tmp_path / 'out')
    run = sample(config, ckpt, out, 'disc-g1', options=options)
    assert run.returncode == 1 and message in run.stderr, run.stderr[-2000:]
    assert not osp.exists(out)


def test_sample_tool_refuses_hierarchical_without_references(
        ranked_run, tmp_path):
    config, ckpt, _ = ranked_run
    run = sample(config, ckpt, str(tmp_path / 'out'), '0',
                 options=('--guidance', 'hierarchical'))
    assert run.returncode == 2 and 'needs references' in run.stderr


def test_inferencer_draws_rank_rows_and_checks_first(ranked_run, tmp_path):
    from finediffusion.inferencer import FineDiffusionInferencer
    config, ckpt, _ = ranked_run
    inferencer = FineDiffusionInferencer(config, ckpt, device='cpu')
    results = inferencer(['disc-g1', 'id:5'], per_class=2,
                         num_sampling_steps=3, guidance='fine_grained',
                         reference='family', out_dir=str(tmp_path / 'out'))
    assert [(p['class_name'], p['rank']) for p in results['predictions']
            ] == [('disc-g1 (genus row)', 'genus')] * 2 + [
                ('cross-g1-hue092-plain', 'sub')] * 2
    assert sorted(os.listdir(tmp_path / 'out')) == [
        '5_0.png', '5_1.png', 'genus_3_0.png', 'genus_3_1.png', 'grid.png'
    ]
    # The genus row cannot be guided against the genus: refused before any
    # image is drawn.
    with pytest.raises(ValueError, match='coarser than'):
        inferencer(['id:5', 'disc-g1'], guidance='fine_grained',
                   reference='genus', out_dir=str(tmp_path / 'refused'))
    assert not osp.exists(tmp_path / 'refused')


def new_species_folder(root, ranked_data):
    """Two new species of 5 images each: one in an existing genus
    (cross-g0), one in a new genus of a new family."""
    import shutil
    image = osp.join(ranked_data, 'cross', 'cross-g0', 'cross-g0-hue060-dark',
                     '0000.png')
    for folder in ('cross/cross-g0/cross-g0-new', 'newfam/newfam-g0/newfam-sp'):
        os.makedirs(osp.join(root, folder))
        for n in range(5):
            shutil.copy(image, osp.join(root, folder, f'{n}.png'))
    return str(root)


def add_species(*args):
    return subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/add_species.py'), *args],
        capture_output=True, text=True)


def test_add_species_trains_only_new_rows_from_their_ancestors(
        ranked_run, tmp_path):
    import torch
    from safetensors.torch import load_file
    from finediffusion.delta import export_delta
    from finediffusion.inference import load_for_sampling
    from finediffusion.models.tiered_dit import CLASS_TABLE
    from finediffusion.weights_only import load_weights
    config, ckpt, work = ranked_run
    data = new_species_folder(tmp_path / 'new', ranked_run_data(config))
    out = str(tmp_path / 'added')
    run = add_species(config, ckpt, '--data', data, '--work-dir', out,
                      '--iters', '3')
    assert run.returncode == 0, run.stderr[-3000:]
    assert '2 new species (10 images), new ancestors: 1 genus, 1 family' \
        in run.stdout
    old_delta = str(tmp_path / 'old.safetensors')
    export_delta(ckpt, old_delta)
    old, new = load_file(old_delta), load_file(osp.join(out,
                                                        'delta.safetensors'))
    key = f'backbone.{CLASS_TABLE}'
    assert set(old) == set(new)
    for name in set(old) - {key, 'backbone.y_embedder.sub2super'}:
        assert torch.equal(old[name], new[name]), name
    # Rows: 80 species, 20 genera, 10 families, null -> 82, 21, 11, null.
    before, after = old[key], new[key]
    kept = list(range(80)) + list(range(82, 102)) + list(range(103, 113)) \
        + [114]
    assert after.shape[0] == before.shape[0] + 4
    assert torch.equal(after[kept], before)
    # The new rows started at their nearest existing ancestor's row (the
    # genus cross-g0, row 80; the null row for the new family) and trained.
    start = load_weights(osp.join(out, 'start.pth'))['state_dict'][key]
    assert torch.equal(start[80], before[80]) and torch.equal(
        start[81], before[-1]) and torch.equal(start[102], before[-1])
    assert not torch.equal(after[80], start[80])
    # Existing species sample bit-identically.
    images = []
    for cfg, weights in ((config, ckpt), (osp.join(out, 'add_species.py'),
                                          osp.join(out,
                                                   'delta.safetensors'))):
        model, taxonomy = load_for_sampling(cfg, weights)
        images.append(model.sample(torch.tensor([0, 5, 79]), 3,
                                   generator=torch.Generator().manual_seed(0)))
    assert torch.equal(*images)
    assert taxonomy.resolve('cross-g0-new') == [80]


def ranked_run_data(config):
    from mmengine.config import Config
    return Config.fromfile(config).taxonomy.data_root


def test_add_species_refuses_known_species_and_keeps_the_work_dir(
        ranked_run, tmp_path):
    config, ckpt, _ = ranked_run
    data = ranked_run_data(config)
    out = str(tmp_path / 'refused')
    run = add_species(config, ckpt, '--data', data, '--work-dir', out)
    assert run.returncode == 1 and 'in the model already' in run.stderr
    assert not osp.exists(out)
    os.makedirs(out)
    open(osp.join(out, 'mine.txt'), 'w').close()
    run = add_species(config, ckpt, '--data', data, '--work-dir', out)
    assert run.returncode == 1 and 'already holds files' in run.stderr
    assert os.listdir(out) == ['mine.txt']
