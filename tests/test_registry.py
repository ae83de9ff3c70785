"""The plugin's modules register into MMagic's registries under new names."""
import json
import subprocess
import sys

import diffusers

# Every registration the plugin makes, by registry.
OURS = {
    'DATASETS': ['HierarchyDataset', 'INat2021Dataset', 'LatentDataset',
                 'VegFruDataset'],
    'DATA_SAMPLERS': ['ResumableInfiniteSampler'],
    'DIFFUSION_SCHEDULERS': ['DiTDiffusion'],
    'HOOKS': ['FullEMAHook', 'PEFTCheckpointHook', 'PEFTFreezeHook',
              'ResumeRandomStateHook',
              'ThroughputHook', 'TrainableEMAHook'],
    'LOOPS': ['ResumableIterBasedTrainLoop'],
    'METRICS': ['ClassifierFidelity', 'ConditionalFID', 'LPIPSDiversity'],
    'MODELS': ['DiTDataPreprocessor', 'FineDiffusion', 'FineGrainedCFG',
               'TieredDataPreprocessor', 'TieredDiT', 'TieredEmbedder',
               'TieredGuidance'],
    'OPTIM_WRAPPERS': ['FiniteAmpOptimWrapper', 'FiniteOptimWrapper'],
    'OPTIM_WRAPPER_CONSTRUCTORS': ['PEFTOptimWrapperConstructor'],
    'TRANSFORMS': ['ADMCenterCrop', 'LoadLatent', 'LoadRGBImage',
                   'LoadTieredImage', 'PickLatentFlip'],
}

# Lists what importing the plugin adds to MMagic's fully populated
# registries, in a fresh interpreter so that nothing was registered before.
_PROBE = """
import json
import mmagic.registry as registries
from mmagic.utils import register_all_modules

def names():
    return {name: set(getattr(registries, name).module_dict)
            for name in dir(registries) if name.isupper()
            and hasattr(getattr(registries, name), 'module_dict')}

register_all_modules()
before = names()
import finediffusion
# The datasets and transforms register when their registries are first
# searched, as a Runner does before building any.
registries.DATASETS.get('HierarchyDataset')
registries.TRANSFORMS.get('LoadRGBImage')
after = names()
print(json.dumps({name: sorted(after[name] - before[name])
                  for name in after if after[name] - before[name]}))
"""


def test_plugin_adds_exactly_its_modules_to_mmagic_registries():
    result = subprocess.run([sys.executable, '-c', _PROBE],
                            capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == OURS


def test_plugin_names_are_not_diffusers_class_names():
    # MMagic registers every diffusers class under its own name.
    ours = {name for names in OURS.values() for name in names}
    assert not ours & set(dir(diffusers))


def test_registered_classes_are_the_plugins():
    import mmagic.registry as registries

    import finediffusion  # noqa: F401

    for registry, names in OURS.items():
        for name in names:
            module = getattr(registries, registry).get(name).__module__
            assert module.startswith('finediffusion.'), (name, module)


def test_collate_function_is_registered_for_configs():
    """MMagic has no function registry: ``collate_fn=dict(type=...)`` is
    looked up in MMEngine's, under MMagic's scope as in a Runner."""
    from mmengine.registry import FUNCTIONS, DefaultScope

    from finediffusion.datasets import stack_collate
    with DefaultScope.overwrite_default_scope('mmagic'):
        assert FUNCTIONS.get('stack_collate') is stack_collate
