"""Exponential moving average of the trainable parameters only."""
from contextlib import contextmanager
from typing import Iterator, List, Optional

import torch
from torch import nn


class TrainableEMA(nn.Module):
    """EMA copies of the named trainable parameters of a module.

    The copies are buffers, so they are saved with the model's state dict;
    frozen parameters are never copied (under PEFT that is 98% of DiT-XL/2).

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
        self._paired: Optional[nn.Module] = None
        self._params: List[nn.Parameter] = []
        params = dict(module.named_parameters())
        for name in self.names:
            self.register_buffer(self._key(name),
                                 params[name].detach().clone())

    @staticmethod
    def _key(name: str) -> str:
        # Buffer names may not contain dots.
        return name.replace('.', '__')

    def _pairs(self, module: nn.Module):
        """(average, parameter) pairs. The parameters are looked up once per
        module (the update runs after every step); the averages each time,
        as moving this module to another device replaces its buffers."""
        if self._paired is not module:
            params = dict(module.named_parameters())
            self._params = [params[n] for n in self.names]
            self._paired = module
        return [(self._buffers[self._key(n)], p)
                for n, p in zip(self.names, self._params)]

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
