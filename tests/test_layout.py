"""Where data goes through the package: the models do not read datasets,
the class embedder is reached only through the backbone, the earlier
registered names stay usable, no function grows past 60 lines."""
import ast
import json
import os
import os.path as osp
import re
import subprocess
import sys

import pytest

PACKAGE = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                   'projects', 'finediffusion')

_MODELS_ALONE = """
import json, sys
import finediffusion.models
before = 'finediffusion.datasets' in sys.modules
from mmagic.registry import DATASETS, TRANSFORMS
dataset = DATASETS.get('HierarchyDataset')
transform = TRANSFORMS.get('LoadRGBImage')
print(json.dumps(dict(before=before, dataset=dataset.__module__,
                      transform=transform.__module__)))
"""


def test_models_do_not_import_the_datasets():
    """The model package runs without the dataset code; MMagic's registries
    import it on first search, as they import MMagic's own."""
    result = subprocess.run([sys.executable, '-c', _MODELS_ALONE],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found == dict(before=False,
                         dataset='finediffusion.datasets.hierarchy',
                         transform='finediffusion.datasets.transforms')


def _sources():
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith('.py'):
                path = osp.join(folder, name)
                with open(path) as f:
                    yield osp.relpath(path, PACKAGE), f.read()


def test_class_embedder_is_named_only_by_the_backbone_and_the_dit_loader():
    naming = sorted(path for path, text in _sources()
                    if 'y_embedder' in text)
    assert naming == [osp.join('models', 'dit_checkpoint.py'),
                      osp.join('models', 'tiered_dit.py')]


def test_no_function_over_60_lines():
    long = []
    for path, text in _sources():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 60:
                    long.append(f'{path}:{node.name} ({lines} lines)')
    assert not long


@pytest.mark.parametrize('registry,old,new', [
    ('HOOKS', 'PEFTFreezeHook', 'PEFTCheckpointHook'),
    ('MODELS', 'FineGrainedCFG', 'TieredGuidance'),
    ('MODELS', 'TieredDataPreprocessor', 'DiTDataPreprocessor'),
    ('TRANSFORMS', 'LoadTieredImage', 'LoadRGBImage'),
])
def test_earlier_registered_names_build_the_renamed_classes(
        registry, old, new):
    import mmagic.registry as registries

    import finediffusion  # noqa: F401
    found = getattr(registries, registry)
    assert found.get(old) is found.get(new)
    assert found.get(new).__name__ == new


def test_vocabulary_of_sampling_configs():
    """Configs name sampling as the code does: scheduler and
    num_sampling_steps (sample_steps, sampler and num_steps are gone)."""
    configs = osp.join(osp.dirname(osp.dirname(PACKAGE)), 'configs')
    stale = []
    for folder, _, files in os.walk(configs):
        for name in files:
            if not name.endswith('.py'):
                continue
            with open(osp.join(folder, name)) as f:
                text = f.read()
            for word in ('sample_steps', 'num_steps', 'sub2super'):
                if re.search(rf'\b{word}\b', text):
                    stale.append(f'{name}: {word}')
            if re.search(r"sampler=dict\(type='\w+Scheduler'", text):
                stale.append(f'{name}: sampler')
    assert not stale
