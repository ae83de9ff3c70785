"""Exponential moving average of the trainable parameters only."""
from contextlib import contextmanager
from typing import Iterator, List, Optional, Tuple

import torch
from torch import nn


def ema_key(name: str) -> str:
    """The state-dict name of the average of parameter ``name`` (relative to
    :class:`TrainableEMA`): buffer names may not contain dots."""
    return name.replace('.', '__')


class TrainableEMA(nn.Module):
    """EMA copies of the named trainable parameters of a module.

    The copies are buffers, so they are saved with the model's state dict;
    frozen parameters are never copied (under PEFT that is 98% of DiT-XL/2).
    The averaged module is not a submodule: its state dict, frozen weights
    included, would otherwise be saved a second time under ``ema.``.

    Args:
        module (nn.Module): The module whose parameters are averaged.
        names (list[str]): Names of its trainable parameters.
        decay (float): EMA decay. Defaults to 0.9999 (DiT).
    """

    def __init__(self, module: nn.Module, names: List[str],
                 decay: float = 0.9999) -> None:
        super().__init__()
        self.decay = decay
        self.names = list(names)
        # (module, its parameters in ``names`` order), held in a tuple so
        # that nn.Module does not register the module as a child.
        self._pairing: Tuple[Optional[nn.Module], List[nn.Parameter]] = (
            None, [])
        params = dict(module.named_parameters())
        for name in self.names:
            self.register_buffer(ema_key(name), params[name].detach().clone())

    def _pairs(self, module: nn.Module):
        """(average, parameter) pairs. The parameters are looked up once per
        module (the update runs after every step); the averages each time,
        as moving this module to another device replaces its buffers."""
        paired, params = self._pairing
        if paired is not module:
            named = dict(module.named_parameters())
            params = [named[n] for n in self.names]
            self._pairing = (module, params)
        return [(self._buffers[ema_key(n)], p)
                for n, p in zip(self.names, params)]

    @torch.no_grad()
    def copy_from(self, module: nn.Module) -> None:
        """Sets the average to the current weights (start of training)."""
        for average, param in self._pairs(module):
            average.copy_(param)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """One EMA step towards the current weights."""
        averages, params = zip(*self._pairs(module))
        torch._foreach_lerp_(list(averages), list(params), 1 - self.decay)

    @contextmanager
    def swapped_in(self, module: nn.Module) -> Iterator[None]:
        """Temporarily loads the averaged weights into ``module``."""
        pairs = self._pairs(module)
        with torch.no_grad():
            for average, param in pairs:
                average.data, param.data = param.data, average.data
        try:
            yield
        finally:
            with torch.no_grad():
                for average, param in pairs:
                    average.data, param.data = param.data, average.data
