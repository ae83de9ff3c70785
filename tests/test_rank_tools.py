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
