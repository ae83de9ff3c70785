"""Installs the FineDiffusion MMagic plugin as the ``finediffusion`` package.

The OpenMMLab stack it needs is pinned in ``requirements/`` and installed by
``tools/setup_env.sh`` (``make env``); see the README for a manual install.
"""
from setuptools import find_packages, setup

setup(
    name='finediffusion',
    version='0.1.0',
    description='FineDiffusion: fine-grained image generation with tiered '
    'class embeddings, parameter-efficient DiT fine-tuning and '
    'fine-grained classifier-free guidance, as an MMagic plugin',
    python_requires='>=3.10,<3.13',
    # The package lives in projects/finediffusion (MMagic's layout for
    # plugins) and is installed under the top-level name finediffusion.
    package_dir={'finediffusion': 'projects/finediffusion'},
    packages=['finediffusion'] + [
        f'finediffusion.{name}'
        for name in find_packages('projects/finediffusion')
    ],
    license='Apache-2.0',
)
