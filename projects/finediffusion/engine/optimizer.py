"""An optimizer constructor that hands the optimizer trainable tensors only
and refuses non-finite updates."""
from typing import Dict, List, Tuple

from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from torch import nn

from mmagic.registry import (OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS,
                             OPTIMIZERS)
from .nonfinite import CHECKED, FiniteStepMixin


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class PEFTOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """MMEngine's default constructor, but frozen tensors never reach the
    optimizer.

    The default passes every parameter, frozen or not: under PEFT that is
    98% of DiT-XL/2 held for nothing, and it would hide a freeze applied
    after the optimizer was built. ``paramwise_cfg`` works as in MMEngine;
    parameters with equal options share one group, so that the optimizer's
    multi-tensor kernels see few, large groups.

    MMEngine's ``OptimWrapper`` and ``AmpOptimWrapper`` (``--amp``) are
    built as :class:`FiniteOptimWrapper` and :class:`FiniteAmpOptimWrapper`,
    which stop the run before an update with a non-finite loss or gradient;
    another wrapper type must mix in :class:`FiniteStepMixin`.
    """

    def __call__(self, model: nn.Module) -> OptimWrapper:
        module = model.module if hasattr(model, 'module') else model
        if self.paramwise_cfg:
            groups = self._trainable_groups(module)
        else:
            groups = [
                dict(params=[p for p in module.parameters() if p.requires_grad])
            ]
        if not groups or not groups[0]['params']:
            raise ValueError('the model has no trainable parameter')
        optimizer = OPTIMIZERS.build(dict(self.optimizer_cfg, params=groups))
        cfg = dict(dict(type='OptimWrapper'), **self.optim_wrapper_cfg)
        name = cfg['type'] if isinstance(cfg['type'], str) else getattr(
            cfg['type'], '__name__', '')
        cfg['type'] = CHECKED.get(name.split('.')[-1], cfg['type'])
        wrapper = OPTIM_WRAPPERS.build(
            cfg, default_args=dict(optimizer=optimizer))
        if not isinstance(wrapper, FiniteStepMixin):
            raise TypeError(
                f'optim_wrapper type {name!r} does not check for non-finite '
                f'updates: use one of {sorted(CHECKED)} (built as '
                f'{sorted(CHECKED.values())}) or mix in FiniteStepMixin')
        wrapper.name_parameters(module)
        return wrapper

    def _trainable_groups(self, module: nn.Module) -> List[dict]:
        """MMEngine's per-parameter groups of the trainable tensors, those
        with equal options merged."""
        per_param: List[dict] = []
        self.add_params(per_param, module)
        merged: Dict[Tuple, dict] = {}
        for group in per_param:
            param = group.pop('params')[0]
            if param.requires_grad:
                key = tuple(sorted(group.items()))
                merged.setdefault(key, dict(group, params=[]))['params'].append(
                    param)
        return list(merged.values())
