"""The synthetic benchmark: generator, judge helpers, grid, base export."""
import os
import os.path as osp

import numpy as np
import pytest
import torch
from PIL import Image

from finediffusion.datasets import HierarchyDataset
from finediffusion.datasets.synthetic import (ClassSpec, base_taxonomy,
                                              fine_taxonomy, render,
                                              write_synthetic_hierarchy)
from finediffusion.taxonomy import Taxonomy
from finediffusion.evaluation.judge import accuracy, intra_class_spread
from finediffusion.visualization import class_grid


def _files(root):
    return sorted(
        osp.relpath(osp.join(d, f), root) for d, _, files in os.walk(root)
        for f in files if f.endswith('.png'))


def test_taxonomies_are_fine_grained_and_disjoint():
    fine, base = fine_taxonomy(), base_taxonomy()
    assert len(fine) >= 100 and len({s.superclass for s in fine}) >= 10
    assert not {s.name for s in fine} & {s.name for s in base}
    for sup in {s.superclass for s in fine}:
        members = [s for s in fine if s.superclass == sup]
        # Subclasses of a superclass share the shape and differ in hue
        # (a narrow band) or shade only.
        assert len({s.family for s in members}) == 1
        hues = sorted(s.hue for s in members)
        assert hues[-1] - hues[0] < 60
        assert len({(s.hue, s.shade) for s in members}) == len(members)


def test_a_dark_shade_draws_a_darker_shape():
    plain, dark = (ClassSpec('x', 'y', 'disc', 120., 1., stripes='none',
                             shade=shade) for shade in (1., 0.55))
    # The centre pixel lies inside the disc whatever the jitter.
    centre = [render(spec, np.random.default_rng(0))[16, 16].max()
              for spec in (plain, dark)]
    assert centre[1] < 0.6 * centre[0]


def test_a_class_is_a_distribution_not_a_template():
    spec = fine_taxonomy()[0]
    rng = np.random.default_rng(0)
    a, b = render(spec, rng), render(spec, rng)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 5


def test_render_refuses_an_unknown_family():
    with pytest.raises(ValueError, match='blob'):
        render(ClassSpec('x', 'y', 'blob', 0., 1.), np.random.default_rng())


def test_writer_is_deterministic_and_reads_as_a_hierarchy(tmp_path):
    a, b, c = (str(tmp_path / n) for n in 'abc')
    write_synthetic_hierarchy(a, 'fine', {'train': 2, 'val': 1}, seed=3)
    write_synthetic_hierarchy(b, 'fine', {'train': 2, 'val': 1}, seed=3,
                              workers=1)
    write_synthetic_hierarchy(c, 'fine', {'train': 2}, seed=4, workers=1)
    files = _files(osp.join(a, 'train'))
    assert len(files) == 200 and files == _files(osp.join(b, 'train'))
    for name in files[:20]:
        same = [np.array(Image.open(osp.join(r, 'train', name)))
                for r in (a, b, c)]
        assert np.array_equal(same[0], same[1])
    assert any(not np.array_equal(
        np.array(Image.open(osp.join(a, 'train', n))),
        np.array(Image.open(osp.join(c, 'train', n)))) for n in files[:5])

    dataset = HierarchyDataset(data_root=osp.join(a, 'val'), pipeline=[])
    taxonomy = dataset.taxonomy
    specs = {s.name: s for s in fine_taxonomy()}
    assert len(taxonomy.names) == 100 and len(dataset) == 100
    for sub, sup in enumerate(taxonomy.sub2super):
        assert specs[taxonomy.names[sub]].superclass == \
            taxonomy.super_names[sup]


def test_writer_skips_identical_and_rewrites_changed_splits(tmp_path):
    root = str(tmp_path / 'base')
    write_synthetic_hierarchy(root, 'base', {'train': 2}, workers=1)
    first = osp.join(root, 'train', 'disc', 'disc-range0', '0001.png')
    stamp = os.stat(first).st_mtime_ns
    write_synthetic_hierarchy(root, 'base', {'train': 2}, workers=1)
    assert os.stat(first).st_mtime_ns == stamp
    write_synthetic_hierarchy(root, 'base', {'train': 1}, workers=1)
    # Fewer images per class: no stale file stays behind.
    assert not osp.exists(first)
    assert len(_files(osp.join(root, 'train'))) == len(base_taxonomy())
    # Classes of other settings (an older version's names) go too.
    stale = osp.join(root, 'train', 'disc', 'disc-old')
    os.makedirs(stale)
    write_synthetic_hierarchy(root, 'base', {'train': 2}, workers=1)
    assert not osp.exists(stale)
    assert len(_files(osp.join(root, 'train'))) == 2 * len(base_taxonomy())
    with pytest.raises(ValueError, match='taxonomy'):
        write_synthetic_hierarchy(root, 'imagenet')
    # A folder it did not write is refused, and kept.
    mine = tmp_path / 'mine' / 'train'
    mine.mkdir(parents=True)
    (mine / 'photo.png').write_bytes(b'')
    with pytest.raises(FileExistsError, match='synthetic.json'):
        write_synthetic_hierarchy(str(tmp_path / 'mine'), 'base',
                                  {'train': 1}, workers=1)
    assert (mine / 'photo.png').exists()


def test_accuracy_and_spread():
    sub2super = [0, 0, 1, 1]
    pred, labels = torch.tensor([0, 1, 2, 0]), torch.tensor([0, 0, 2, 3])
    assert accuracy(pred, labels, sub2super) == dict(
        subclass_top1=0.5, superclass_top1=0.75)
    same = torch.zeros(6, 4)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    assert intra_class_spread(same, labels) == 0
    spread = torch.cat([torch.zeros(3, 4), torch.eye(4)[:3] * 2])
    # Class 0 is one point, class 1 three points 2*sqrt(2) apart.
    assert intra_class_spread(spread, labels) == pytest.approx(2**0.5)
    assert intra_class_spread(same[:2], torch.tensor([0, 1])) is None


def test_class_grid_rows_and_groups():
    taxonomy = Taxonomy(['a', 'b', 'c'], [0, 0, 1], ['x', 'y'])
    images = np.zeros((2, 3, 8, 8, 3), dtype=np.uint8)
    grid = class_grid({'real': images, 'cfg': images + 255}, [0, 1],
                      taxonomy, zoom=2, gap=4)
    width, height = grid.size
    assert height == 16 + 2 * 16
    array = np.array(grid)
    # Second group (white images) starts after the labels, the first
    # group's 3 columns of 16 px and the gap.
    assert (array[16:, -48:] == 255).all()
    assert (array[16:, -48 - 4 - 48:-48 - 4] == 0).all()
