"""StyleGAN's fixed noise injection (DragGAN's configs) off CUDA."""
from types import ModuleType

import torch


def fix_noise_injection(module: ModuleType) -> None:
    """Makes ``NoiseInjection(fixed_noise=True)`` work on any device.

    MMagic draws the fixed noise as ``torch.manual_seed(1024);
    torch.randn(...).cuda()``: on a machine without CUDA DragGAN fails with
    "Found no NVIDIA driver", and on any machine each forward reseeds the
    global generator, so that every later random draw of the run repeats.
    The fix draws the same values (seed 1024, on the CPU) from a generator
    of its own and puts them on the features' device.
    """
    injection = module.NoiseInjection
    if getattr(injection.forward, 'own_generator', False):
        return
    forward = injection.forward

    def fixed_noise_forward(self, image, noise=None, return_noise=False):
        if noise is None and self.fixed_noise:
            batch, _, height, width = image.shape
            generator = torch.Generator().manual_seed(1024)
            noise = torch.randn(batch, 1, height, width,
                                generator=generator).to(image.device)
        return forward(self, image, noise=noise, return_noise=return_noise)

    fixed_noise_forward.own_generator = True
    injection.forward = fixed_noise_forward
