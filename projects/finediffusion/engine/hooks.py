"""Hooks that make PEFT and the trainable-only EMA visible to the Runner."""
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import BaseLoop, Runner

from mmagic.registry import HOOKS
from ..delta import (is_peft_checkpoint, peft_state_dict, require_shapes,
                     trim_checkpoint)
from ..models.peft import trainable_count
from .label_range import check_label_range
from .taxonomy_checks import check_checkpoint, check_dataset, check_loop


def _unwrap(runner: Runner):
    model = runner.model
    return model.module if is_model_wrapper(model) else model


@HOOKS.register_module(name=['PEFTCheckpointHook', 'PEFTFreezeHook'])
class PEFTCheckpointHook(Hook):
    """Checks, reports and checkpoints the trainable set of a FineDiffusion.

    Registered also as ``PEFTFreezeHook``, its earlier name.

    The freeze itself happens when the model is built (its ``trainable``
    argument), because MMEngine wraps the model in DDP inside
    ``Runner.__init__``, before any hook runs, and DDP only reduces the
    gradients of parameters that required grad at wrapping. This hook:

    - checks that the training data's classes and labels are rows of the
      model's class table;
    - checks that the training, validation and test data and any loaded
      checkpoint have the model's taxonomy (the first differing subclass
      fails the run, with its names and both sources);
    - logs the trainable count and percentage;
    - fails unless the optimizer holds exactly the trainable parameters
      (use ``PEFTOptimWrapperConstructor``);
    - writes checkpoints with exactly the trainable tensors, their EMA and
      the taxonomy (:func:`finediffusion.delta.trim_checkpoint`), and on
      loading refuses a
      checkpoint lacking any of them and fills the frozen tensors in from
      the model, which holds the pretrained weights by then;
    - refuses a loaded checkpoint with a tensor of another shape than the
      model's (MMEngine would only log it and keep the model's tensor).
    """

    priority = 'VERY_HIGH'

    def before_train(self, runner: Runner) -> None:
        model = _unwrap(runner)
        # Before the first step: a label beyond the table fails mid-step.
        check_label_range(runner.train_dataloader.dataset,
                          model.backbone.num_classes, 'training')
        check_dataset(runner, runner.train_dataloader.dataset,
                      'train_dataloader')
        # Now rather than at the first validation, hours later.
        if isinstance(getattr(runner, '_val_loop', None), BaseLoop):
            self.before_val(runner)
        params = dict(model.named_parameters())
        trainable = {n for n, p in params.items() if p.requires_grad}
        # The share of the DiT, as the paper reports it (the VAE is frozen).
        count, total = trainable_count(model.backbone)
        runner.logger.info(
            f'PEFT: {count:,} of {total:,} backbone parameters train '
            f'({100 * count / total:.3f}%), {len(trainable)} tensors')
        held = {
            id(p)
            for group in runner.optim_wrapper.optimizer.param_groups
            for p in group['params']
        }
        frozen_held = sorted(n for n, p in params.items()
                             if id(p) in held and n not in trainable)
        missing = sorted(n for n in trainable if id(params[n]) not in held)
        if model.ema is not None and not any(
                isinstance(hook, TrainableEMAHook) for hook in runner.hooks):
            raise RuntimeError('the model keeps an EMA but no TrainableEMAHook '
                               'updates it: add it to custom_hooks, or set '
                               'model.ema_decay=None')
        if frozen_held or missing:
            raise RuntimeError(
                'the optimizer must hold exactly the trainable parameters '
                "(set optim_wrapper.constructor='PEFTOptimWrapperConstructor'"
                f'); frozen but held: {frozen_held[:5]} '
                f'({len(frozen_held)}), trainable but not held: '
                f'{missing[:5]} ({len(missing)})')

    def before_val(self, runner: Runner) -> None:
        """Checks that the validation data has the model's taxonomy."""
        check_loop(runner, runner.val_loop, 'val_dataloader')

    def before_test(self, runner: Runner) -> None:
        """Checks that the test data has the model's taxonomy, before the
        test loop computes anything."""
        check_loop(runner, runner.test_loop, 'test_dataloader')

    def before_save_checkpoint(self, runner: Runner, checkpoint: dict) -> None:
        trim_checkpoint(_unwrap(runner), checkpoint)

    def after_load_checkpoint(self, runner: Runner, checkpoint: dict) -> None:
        check_checkpoint(runner, checkpoint)
        model = _unwrap(runner)
        # MMEngine passes no file name to this hook; the Runner keeps it.
        source = str(getattr(runner, '_load_from', None) or 'the checkpoint')
        if is_peft_checkpoint(checkpoint):
            checkpoint['state_dict'] = peft_state_dict(
                model, checkpoint, source, require_trained=True)
        # Before MMEngine's non-strict load, which would skip such a tensor.
        # A bare state dict (no 'state_dict' key) is loaded as a whole.
        require_shapes(checkpoint.get('state_dict', checkpoint),
                       model.state_dict(), source)


@HOOKS.register_module()
class TrainableEMAHook(Hook):
    """Updates the model's EMA of its trainable parameters after each step.

    A hook rather than part of ``train_step``, because MMEngine's DDP wrapper
    runs its own train step and never calls the model's.
    """

    priority = 'NORMAL'

    def before_train(self, runner: Runner) -> None:
        model = _unwrap(runner)
        if model.ema is None:
            runner.logger.info(
                'TrainableEMAHook: the model keeps no EMA (model.ema_decay='
                'None); checkpoints, deltas and samples hold the trained '
                'weights')
            return
        # A fresh run starts the average at the (pretrained) weights; a
        # resumed one has its average from the checkpoint.
        if runner.iter == 0:
            model.ema.copy_from(model.backbone)

    def after_train_iter(self,
                         runner: Runner,
                         batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        model = _unwrap(runner)
        if model.ema is not None:
            model.ema.update(model.backbone)


# The earlier name (also registered), for code that imports it.
PEFTFreezeHook = PEFTCheckpointHook
