"""MMagic's GAN weight initialisations that fail under the Runner."""
from types import ModuleType
from typing import Optional

from torch import nn


def _dcgan_init(module: nn.Module) -> Optional[str]:
    """Initialises one module as DCGAN does (Radford et al. 2016, sec. 4):
    conv weights from N(0, 0.02), BatchNorm weights from N(0, 1) as MMagic
    draws them, biases 0. Returns what it did, or None for other modules."""
    from mmengine.model import normal_init
    from torch.nn.modules.batchnorm import _BatchNorm
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        normal_init(module, 0, 0.02)
        return 'conv weight ~ N(0, 0.02), bias 0 (DCGAN)'
    if isinstance(module, _BatchNorm):
        nn.init.normal_(module.weight.data)
        nn.init.constant_(module.bias.data, 0)
        return 'BatchNorm weight ~ N(0, 1), bias 0 (DCGAN)'
    return None


def fix_dcgan_discriminator(module: ModuleType) -> None:
    """Makes ``DCGANDiscriminator.init_weights`` run.

    MMagic's version records an ``init_info`` for every submodule but sets
    it only for conv and BatchNorm layers, so the first other module (the
    discriminator itself) raises ``UnboundLocalError: init_info``: DCGAN and
    LSGAN configs cannot start under the Runner, which calls
    ``init_weights``. The replacement draws the same values in the same
    order and records the info of the layers it initialised.
    """
    from mmengine.model import BaseModule, update_init_info
    discriminator = module.DCGANDiscriminator
    if getattr(discriminator.init_weights, 'records_initialised_only', False):
        return

    def init_weights(self) -> None:
        if self.init_cfg is not None and self.init_cfg['type'] == 'Pretrained':
            BaseModule.init_weights(self)
            return
        for submodule in self.modules():
            info = _dcgan_init(submodule)
            if info is not None and hasattr(submodule, '_params_init_info'):
                update_init_info(submodule, info)

    init_weights.records_initialised_only = True
    discriminator.init_weights = init_weights


def fix_generation_init_weights(module: ModuleType) -> None:
    """Makes ``generation_init_weights`` (pix2pix, CycleGAN, the patch
    discriminators) run under the Runner.

    Its per-module function records an ``init_info`` it sets only for conv,
    linear and BatchNorm layers, for every module holding
    ``_params_init_info``, which the Runner's top-level ``init_weights``
    gives all of them: ``UnboundLocalError: init_info``. MMagic's function
    still draws every value: the wrapper hides the records while it runs,
    then records the initialisation once for the whole network.
    """
    from mmengine.model import update_init_info
    original = module.generation_init_weights
    if getattr(original, 'records_once', False):
        return

    def generation_init_weights(net: nn.Module, init_type: str = 'normal',
                                init_gain: float = 0.02) -> None:
        records = {m: m._params_init_info for m in net.modules()
                   if '_params_init_info' in vars(m)}
        for m in records:
            del m._params_init_info
        try:
            original(net, init_type=init_type, init_gain=init_gain)
        finally:
            for m, record in records.items():
                m._params_init_info = record
        if net in records:
            update_init_info(net, f'generation_init_weights: {init_type}, '
                             f'gain {init_gain}')

    generation_init_weights.records_once = True
    module.generation_init_weights = generation_init_weights
