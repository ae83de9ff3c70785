"""Data transforms: robust image loading and DiT's (ADM's) center crop."""
from typing import List, Optional

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.logging import print_log
from PIL import Image

from mmagic.registry import TRANSFORMS


# Integer modes PIL gives 16-bit images (PNG, TIFF); converting them to RGB
# clips every value above 255 instead of scaling.
SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I')


def _sixteen_to_la(image: Image.Image) -> Image.Image:
    """A 16-bit grayscale image as 8-bit luminance and alpha (mode LA).

    Values are scaled by 255 / 65535 and rounded (the inverse of the usual
    8-to-16-bit expansion, ``v * 257``); mode 'I' (32-bit) is read as 16-bit,
    the depth PIL opens 16-bit PNGs at, and values beyond it are clipped. A
    tRNS colour key (``info['transparency']``, a 16-bit value) makes the
    pixels equal to it transparent.
    """
    values = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
    gray = ((values * 255 + 32767) // 65535).astype(np.uint8)
    key = image.info.get('transparency')
    alpha = np.full(gray.shape, 255, np.uint8)
    if isinstance(key, int):
        alpha[values == key] = 0
    return Image.fromarray(np.stack([gray, alpha], -1), 'LA')


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB; transparent pixels are laid on white.

    Transparency is an alpha channel (RGBA, LA, PA, ...) or a tRNS entry
    (``info['transparency']``: a palette's alpha table, or the colour key of
    a grayscale, RGB or 16-bit image). 16-bit images are scaled to 8 bits.
    EXIF orientation is ignored, as in DiT's and ADM's loaders.

    Args:
        image (PIL.Image.Image): A decoded image, any mode.

    Returns:
        PIL.Image.Image: Mode RGB, the same size.
    """
    if image.mode in SIXTEEN_BIT_MODES:
        image = _sixteen_to_la(image)
    if image.has_transparency_data:
        rgba = image.convert('RGBA')
        white = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert('RGB')
    return image.convert('RGB')


@TRANSFORMS.register_module(name=['LoadRGBImage', 'LoadTieredImage'])
class LoadRGBImage(BaseTransform):
    """Decodes ``<key>_path`` with PIL to an RGB uint8 array (H, W, 3).

    Grayscale, 16-bit, CMYK, palette and transparent images are converted
    (:func:`to_rgb`: 16-bit scaled to 8, transparency over white). A file
    that is missing or fails to decode (also one whose header claims more
    than twice ``PIL.Image.MAX_IMAGE_PIXELS``, PIL's decompression-bomb
    limit) is skipped: it is logged with its path, the error and the running
    count, and the dataset draws another sample; past ``max_failures``
    skipped files (in one process) the run stops with the list, as the data
    is then likely broken.

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
        # Any exception of the decoder is the file's: PIL raises OSError,
        # ValueError, SyntaxError, DecompressionBombError (a header that
        # claims more than twice Image.MAX_IMAGE_PIXELS), struct errors and
        # others on broken or hostile files.
        except Exception as error:  # noqa: B902
            if path not in self.failures:  # each file counts, and logs, once
                self.failures.append(path)
                print_log(f'skipped unreadable image {path} '
                          f'({type(error).__name__}: {error}); '
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
    bicubic resize; their number is logged now and then. Memory stays of the
    order of the output: when the resized image would be more than
    ``max_aspect`` times longer than wide (a 4000 x 1 strip resized whole
    to 256 px would take 786 MB), only the source region of the central
    square is resized, by PIL's ``resize(box=...)``, which samples the same
    source pixels (the result can differ from ADM's by rounding, at most a
    level or two). Other images take ADM's path exactly.

    Args:
        size (int): Output side, e.g. 256 or 512.
        key (str): Defaults to 'gt'.
        max_aspect (float): Aspect ratio above which only the central
            region is resized. Defaults to 4.
    """

    def __init__(self, size: int, key: str = 'gt',
                 max_aspect: float = 4.) -> None:
        self.size = size
        self.key = key
        self.max_aspect = max_aspect
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
        resized = tuple(round(s * scale) for s in image.size)
        left, top = ((s - self.size) // 2 for s in resized)
        if max(resized) <= self.max_aspect * self.size:
            array = np.asarray(image.resize(resized, resample=Image.BICUBIC))
            # A copy: PIL's arrays are read-only and flips work in place.
            array = array[top:top + self.size,
                          left:left + self.size].copy()
        else:
            # The central square's source region, in the coordinates the
            # whole resize maps each output pixel to.
            x_scale, y_scale = (s / r for s, r in zip(image.size, resized))
            box = (left * x_scale, top * y_scale,
                   (left + self.size) * x_scale, (top + self.size) * y_scale)
            array = np.array(image.resize((self.size, self.size),
                                          resample=Image.BICUBIC, box=box))
        results[self.key] = array
        results[f'{self.key}_shape'] = array.shape
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


# The earlier name (also registered), for code that imports it.
LoadTieredImage = LoadRGBImage
