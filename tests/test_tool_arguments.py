"""Every count argument of the tools, and sample.py's class names: a bad
value is a usage error (exit status 2 naming the option) before anything
loads, not a traceback or a hang later. The tools run through their main."""
import os.path as osp
import sys

import pytest

from conftest import TINY_CONFIG, load_tool


SAMPLE = [TINY_CONFIG, 'missing.pth', '--classes', '0']


@pytest.mark.parametrize('name,argv,message', [
    ('sample', SAMPLE + ['-n', '0'], 'argument -n/--per-class: must be at '
     'least 1, got 0'),
    ('sample', SAMPLE + ['-n', '-1'], 'argument -n/--per-class: must be at '
     'least 1, got -1'),
    ('sample', SAMPLE + ['--batch-size', '-1'], 'argument --batch-size: '
     'must be at least 1, got -1'),
    ('sample', SAMPLE + ['--batch-size', '0'], 'argument --batch-size: '
     'must be at least 1, got 0'),
    ('sample', SAMPLE + ['--steps', '0'], 'argument --num-sampling-steps/'
     '--steps: must be at least 1, got 0'),
    # Respacing keeps the first and the last step: one step raised an
    # IndexError deep in the sampler.
    ('sample', SAMPLE + ['--steps', '1'], 'argument --num-sampling-steps/'
     '--steps: DDPM sampling takes at least 2 steps'),
    ('sample', SAMPLE + ['-n', 'two'], "argument -n/--per-class: invalid "
     "int value: 'two'"),
    ('sample', [TINY_CONFIG, 'missing.pth', '--classes', '1', ''],
     "argument --classes: empty class name ''"),
    ('sample', [TINY_CONFIG, 'missing.pth', '--classes', ' '],
     "argument --classes: empty class name ' '"),
    ('cache_latents', [TINY_CONFIG, 'out', '--shard-size', '0'],
     'argument --shard-size: must be at least 1, got 0'),
    ('cache_latents', [TINY_CONFIG, 'out', '--batch-size', '-2'],
     'argument --batch-size: must be at least 1, got -2'),
    ('cache_latents', [TINY_CONFIG, 'out', '--workers', '-1'],
     'argument --workers: must be at least 0, got -1'),
    ('make_toy_data', ['{root}', '--images-per-class', '0'],
     'argument --images-per-class: must be at least 1, got 0'),
    ('make_toy_data', ['{root}', '--subclasses-per-super', '0'],
     'argument --subclasses-per-super: must be at least 1, got 0'),
    ('make_toy_data', ['{root}', '--superclasses', '-1'],
     'argument --superclasses: must be at least 1, got -1'),
    ('make_toy_data', ['{root}', '--size', '0'],
     'argument --size: must be at least 1, got 0'),
], ids=lambda v: v if isinstance(v, str) and ' ' not in v else None)
def test_bad_counts_are_usage_errors(tmp_path, capsys, monkeypatch, name,
                                    argv, message):
    root = str(tmp_path / 'toy')
    monkeypatch.setattr(sys, 'argv', [f'tools/{name}.py'] +
                        [a.format(root=root) for a in argv])
    with pytest.raises(SystemExit) as exit_info:
        load_tool(name).main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith('usage: ') and message in err
    assert not osp.exists(root)  # nothing written
