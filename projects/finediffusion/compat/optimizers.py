"""MMagic's optimizer settings that current torch refuses."""
from types import ModuleType


def float_betas(optimizer_cfg: dict) -> None:
    """Makes the ``betas`` of an optimizer config floats, in place.

    MMagic's StyleGAN2/3, DragGAN and other configs write
    ``betas=(0, 0.99 ** ratio)``; torch's Adam and AdamW now raise
    ``ValueError: betas must be either both floats or both Tensors`` for
    the int 0. Tensors and floats are left as they are.
    """
    betas = optimizer_cfg.get('betas')
    if isinstance(betas, (tuple, list)) and any(
            isinstance(b, int) and not isinstance(b, bool) for b in betas):
        optimizer_cfg['betas'] = type(betas)(
            float(b) if isinstance(b, int) else b for b in betas)


def fix_default_constructor(module: ModuleType) -> None:
    """Makes MMEngine's DefaultOptimWrapperConstructor (which MMagic's
    multi-optimizer constructors also use) pass float betas."""
    constructor = module.DefaultOptimWrapperConstructor
    if getattr(constructor.__init__, 'float_betas', False):
        return
    init = constructor.__init__

    def __init__(self, optim_wrapper_cfg: dict, *args, **kwargs) -> None:
        init(self, optim_wrapper_cfg, *args, **kwargs)
        float_betas(self.optimizer_cfg)

    __init__.float_betas = True
    constructor.__init__ = __init__
