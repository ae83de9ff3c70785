"""An optimizer constructor that hands the optimizer trainable tensors only."""
from typing import Dict, List, Tuple

from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from torch import nn

from mmagic.registry import (OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS,
                             OPTIMIZERS)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class PEFTOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """MMEngine's default constructor, but frozen tensors never reach the
    optimizer.

    The default passes every parameter, frozen or not: under PEFT that is
    98% of DiT-XL/2 held for nothing, and it would hide a freeze applied
    after the optimizer was built. ``paramwise_cfg`` works as in MMEngine;
    parameters with equal options share one group, so that the optimizer's
    multi-tensor kernels see few, large groups.
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
        return OPTIM_WRAPPERS.build(
            dict(dict(type='OptimWrapper'), **self.optim_wrapper_cfg),
            default_args=dict(optimizer=optimizer))

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
