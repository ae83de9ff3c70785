"""MMagic's PSNR under numpy 2's scalar promotion (NEP 50)."""
from types import ModuleType

import numpy as np


def fix_psnr(module: ModuleType) -> None:
    """Computes PSNR's logarithm in float64 again.

    MMagic's ``psnr`` takes the float32 mean squared error of the images
    (``metrics_utils.img_transform`` casts them to float32) into
    ``20 * log10(255 / sqrt(mse))``. numpy 1 promoted that Python-float
    arithmetic on a float32 scalar to float64; numpy 2 keeps float32, which
    moves results from the 7th significant digit on (MMagic's own tests
    fail: 48.130806 for 48.1308036). The replacement computes what numpy 1
    did: the float32 error and its float32 square root, then
    20 log10(255 / root) in float64.
    """
    if getattr(module.psnr, 'float64_tail', False):
        return
    img_transform = module.img_transform

    def psnr(img1, img2, crop_border=0, input_order='HWC', convert_to=None,
             channel_order='rgb'):
        if img1.shape != img2.shape:  # MMagic raises AssertionError here
            raise AssertionError(f'psnr needs two images of one shape, got '
                                 f'{img1.shape} and {img2.shape}')
        options = dict(crop_border=crop_border, input_order=input_order,
                       convert_to=convert_to, channel_order=channel_order)
        error = np.mean(np.square(
            img_transform(img1, **options) - img_transform(img2, **options)))
        if error == 0:
            return float('inf')
        return 20. * np.log10(255. / np.float64(np.sqrt(error)))

    psnr.__doc__ = module.psnr.__doc__
    psnr.float64_tail = True
    module.psnr = psnr
