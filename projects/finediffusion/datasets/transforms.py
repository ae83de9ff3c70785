"""Data transforms: robust image loading and DiT's (ADM's) center crop."""
from typing import List, Optional

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.logging import print_log
from PIL import Image

from mmagic.registry import TRANSFORMS


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to RGB; transparent images are laid on white."""
    if image.mode in ('RGBA', 'LA') or (image.mode == 'P'
                                         and 'transparency' in image.info):
        rgba = image.convert('RGBA')
        white = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert('RGB')
    return image.convert('RGB')


@TRANSFORMS.register_module()
class LoadTieredImage(BaseTransform):
    """Decodes ``<key>_path`` with PIL to an RGB uint8 array (H, W, 3).

    Grayscale, CMYK, palette and alpha images are converted (alpha over
    white). A file that is missing or fails to decode is skipped: it is
    logged with its path and the running count, and the dataset draws
    another sample; past ``max_failures`` skipped files (in one process) the
    run stops with the list, as the data is then likely broken.

    Args:
        key (str): Defaults to 'gt'.
        max_failures (int): Distinct bad files tolerated per process.
            Defaults to 100.
        channel_order (str): 'rgb', or 'bgr' for models that take images
            as OpenCV reads them (mmpretrain classifiers). Defaults to 'rgb'.
    """

    def __init__(self,
                 key: str = 'gt',
                 max_failures: int = 100,
                 channel_order: str = 'rgb') -> None:
        if channel_order not in ('rgb', 'bgr'):
            raise ValueError(
                f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        self.key = key
        self.max_failures = max_failures
        self.channel_order = channel_order
        self.failures: List[str] = []

    def transform(self, results: dict) -> Optional[dict]:
        path = results[f'{self.key}_path']
        try:
            with Image.open(path) as image:
                image.load()
                rgb = to_rgb(image)
        except (OSError, ValueError, SyntaxError) as error:
            if path not in self.failures:  # each file counts, and logs, once
                self.failures.append(path)
                print_log(f'skipped unreadable image {path} ({error}); '
                          f'{len(self.failures)} files skipped so far',
                          'current', level=30)
            if len(self.failures) > self.max_failures:
                raise RuntimeError(
                    f'{len(self.failures)} images failed to load, more than '
                    f'max_failures={self.max_failures}: '
                    f'{self.failures[:10]}...')
            return None
        image = np.array(rgb)  # writable: later flips are in place
        if self.channel_order == 'bgr':
            image = np.ascontiguousarray(image[..., ::-1])
        results[self.key] = image
        results[f'ori_{self.key}_shape'] = image.shape
        results[f'{self.key}_channel_order'] = self.channel_order
        results[f'{self.key}_color_type'] = 'color'
        return results


@TRANSFORMS.register_module()
class ADMCenterCrop(BaseTransform):
    """DiT's preprocessing (ADM's ``center_crop_arr``): halve with a box
    filter while the short side is at least twice ``size``, resize the
    short side to ``size`` (bicubic), and cut the central square.

    Images whose short side is below ``size`` are upscaled by the same
    bicubic resize; their number is logged now and then.

    Args:
        size (int): Output side, e.g. 256 or 512.
        key (str): Defaults to 'gt'.
    """

    def __init__(self, size: int, key: str = 'gt') -> None:
        self.size = size
        self.key = key
        self.upscaled = 0

    def transform(self, results: dict) -> dict:
        image = Image.fromarray(results[self.key])
        if min(image.size) < self.size:
            self.upscaled += 1
            if self.upscaled == 1 or self.upscaled % 1000 == 0:
                print_log(f'upscaled {results.get(f"{self.key}_path")} '
                          f'{image.size} to {self.size} px; {self.upscaled} '
                          'upscaled so far', 'current')
        while min(image.size) >= 2 * self.size:
            image = image.resize(tuple(s // 2 for s in image.size),
                                 resample=Image.BOX)
        scale = self.size / min(image.size)
        image = image.resize(
            tuple(round(s * scale) for s in image.size),
            resample=Image.BICUBIC)
        array = np.asarray(image)
        top = (array.shape[0] - self.size) // 2
        left = (array.shape[1] - self.size) // 2
        # A copy: PIL's arrays are read-only and flips work in place.
        results[self.key] = array[top:top + self.size,
                                  left:left + self.size].copy()
        results[f'{self.key}_shape'] = results[self.key].shape
        return results


@TRANSFORMS.register_module()
class LoadLatent(BaseTransform):
    """Reads one image's cached posterior statistics (both flips):
    ``latent_mean`` and ``latent_std``, each (2, C, h, w), in the dtype the
    cache stores.

    Each is a copy of its row: a slice of a memory-mapped shard is a view
    of the whole shard tensor (32 MiB for 1,024 DiT-XL/2-256 images), and a
    data-loader worker hands a sample to the main process by moving the
    whole storage of its tensors into shared memory.
    """

    def __init__(self) -> None:
        self._files = {}

    def transform(self, results: dict) -> dict:
        from safetensors import safe_open
        path = results['latent_path']
        if path not in self._files:
            # Memory-mapped: no file descriptor stays open per shard.
            self._files[path] = safe_open(path, framework='pt')
        f, row = self._files[path], results['latent_row']
        results['latent_mean'] = f.get_slice('mean')[row].clone()
        results['latent_std'] = f.get_slice('std')[row].clone()
        return results


@TRANSFORMS.register_module()
class PickLatentFlip(BaseTransform):
    """Keeps the statistics of the mirrored image with probability
    ``prob`` (the latent counterpart of a random horizontal flip)."""

    def __init__(self, prob: float = 0.5) -> None:
        self.prob = prob

    def transform(self, results: dict) -> dict:
        flip = int(np.random.rand() < self.prob)
        for key in ('latent_mean', 'latent_std'):
            results[key] = results[key][flip]
        results['flip'] = bool(flip)
        return results
