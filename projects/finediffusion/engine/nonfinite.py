"""Optimizer wrappers that stop training before a non-finite update.

One NaN (a latent from an fp16 VAE, a corrupt cached entry) makes the loss
and then every gradient NaN; an optimizer step with them writes NaN into the
weights, the EMA follows, and every later checkpoint is lost. These wrappers
check the step's loss and gradients after the backward pass and before the
update, and raise :class:`NonFiniteError` naming the iteration, the loss
terms, the tensors and the non-finite inputs of the batch (as the model
reports them), so that the newest checkpoint stays the last good state.

The check costs one device synchronisation per update: a multi-tensor
inf-norm of the gradients (NaN propagates through it) and the loss flags
are read together. In DDP it runs on the all-reduced gradients, and the
flags are all-reduced too (two elements, one collective), so every rank
stops at the same iteration, also when only one rank's loss is non-finite,
instead of one rank raising while the others wait in the next all-reduce.
"""
from typing import Dict, List, Optional

import torch
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from torch import Tensor, nn
from torch import distributed as dist

from mmagic.registry import OPTIM_WRAPPERS

# How many tensor names an error message lists.
SHOWN = 8


class NonFiniteError(FloatingPointError):
    """A training step produced a non-finite loss or gradient."""


class FiniteStepMixin:
    """Checks the loss and gradients of each update before applying it.

    Mixed into an MMEngine optimizer wrapper (before it in the bases).
    Without a loss scaler, a non-finite loss or gradient raises
    :class:`NonFiniteError`. With one (``AmpOptimWrapper``), a non-finite
    loss raises, while non-finite gradients of a finite loss are the scaled
    backward pass overflowing: the scaler skips that update and lowers its
    scale, by its design, so nothing non-finite reaches the weights.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._loss_finite: Optional[Tensor] = None
        self._loss: Optional[Tensor] = None
        self._names: Dict[int, str] = {}
        self._model: Optional[nn.Module] = None

    def name_parameters(self, model: nn.Module) -> None:
        """Names ``model``'s tensors in error messages; its optional
        ``nonfinite_report()`` (list of lines) describes the batch."""
        self._names = {id(p): n for n, p in model.named_parameters()}
        self._model = model

    def update_params(self,
                      loss: Tensor,
                      step_kwargs: Optional[dict] = None,
                      zero_kwargs: Optional[dict] = None) -> None:
        # Accumulated on the device (no synchronisation) until the update.
        finite = torch.isfinite(loss.detach())
        self._loss_finite = (finite if self._loss_finite is None else
                             self._loss_finite & finite)
        self._loss = loss.detach()
        super().update_params(loss, step_kwargs, zero_kwargs)

    def step(self, **kwargs) -> None:
        self.check_finite()
        super().step(**kwargs)

    def _params_with_grads(self) -> List[Tensor]:
        return [
            p for group in self.optimizer.param_groups
            for p in group['params'] if p.grad is not None
        ]

    def check_finite(self) -> None:
        """Raises :class:`NonFiniteError` before a non-finite update.

        Raises:
            NonFiniteError: Naming the iteration (1-based, as logged), the
                loss, the tensors with non-finite gradients and what the
                model reports about the batch.
        """
        params = self._params_with_grads()
        if not params:
            return
        norms = torch._foreach_norm([p.grad for p in params], float('inf'))
        finite_each = torch.stack(norms).isfinite()
        device = finite_each.device
        flags = torch.stack([
            finite_each.all(),
            (self._loss_finite.to(device) if self._loss_finite is not None
             else torch.ones((), dtype=torch.bool, device=device)),
        ]).float()
        self._loss_finite = None
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(flags, op=dist.ReduceOp.MIN)
        grads_finite, loss_finite = (bool(f) for f in flags.tolist())
        scaler = getattr(self, 'loss_scaler', None)
        scaled = scaler is not None and scaler.is_enabled()
        if loss_finite and (grads_finite or scaled):
            return
        bad = [
            self._names.get(id(p), f'parameter {i}')
            for i, (p, finite) in enumerate(zip(params, finite_each.tolist()))
            if not finite
        ]
        iteration = self.message_hub.get_info('iter')
        where = (f'iteration {iteration + 1}' if iteration is not None
                 else 'this step')
        loss = '?' if self._loss is None else f'{float(self._loss):.6g}'
        lines = [
            f'non-finite values at {where}, before the update: '
            f'loss {loss} on this rank (all ranks: '
            f'{"finite" if loss_finite else "non-finite"}); '
            f'{len(bad)} of {len(params)} gradient tensors non-finite'
            + (f' ({", ".join(bad[:SHOWN])}'
               f'{", ..." if len(bad) > SHOWN else ""})' if bad else '')
        ]
        report = getattr(self._model, 'nonfinite_report', None)
        if report is not None:
            lines.extend(report())
        lines.append('the update was not applied and this state is not '
                     'saved: the newest checkpoint is the last good one')
        message = '\n  '.join(lines)
        print_log(message, 'current', level=40)
        raise NonFiniteError(message)


@OPTIM_WRAPPERS.register_module()
class FiniteOptimWrapper(FiniteStepMixin, OptimWrapper):
    """MMEngine's ``OptimWrapper`` that refuses non-finite updates (see
    :class:`FiniteStepMixin`)."""


@OPTIM_WRAPPERS.register_module()
class FiniteAmpOptimWrapper(FiniteStepMixin, AmpOptimWrapper):
    """MMEngine's ``AmpOptimWrapper`` that refuses a non-finite loss (see
    :class:`FiniteStepMixin`)."""


# The wrapper types PEFTOptimWrapperConstructor replaces by a checked one.
CHECKED = {
    'OptimWrapper': 'FiniteOptimWrapper',
    'AmpOptimWrapper': 'FiniteAmpOptimWrapper',
}
