"""Hooks that make PEFT and the trainable-only EMA visible to the Runner."""
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from mmagic.registry import HOOKS
from ..datasets.label_range import check_label_range
from ..models.checkpoint_io import delta_keys
from ..models.peft import trainable_count


def _unwrap(runner: Runner):
    model = runner.model
    return model.module if is_model_wrapper(model) else model


@HOOKS.register_module()
class PEFTFreezeHook(Hook):
    """Checks, reports and checkpoints the trainable set of a FineDiffusion.

    The freeze itself happens when the model is built (its ``trainable``
    argument), because MMEngine wraps the model in DDP inside
    ``Runner.__init__``, before any hook runs, and DDP only reduces the
    gradients of parameters that required grad at wrapping. This hook:

    - checks that the training data's classes and labels are rows of the
      model's class table, and that the data has the model's taxonomy;
    - logs the trainable count and percentage;
    - fails unless the optimizer holds exactly the trainable parameters
      (use ``PEFTOptimWrapperConstructor``);
    - writes checkpoints with the trainable tensors and the buffers (the
      EMA, the taxonomy) only, and on loading fills the frozen tensors in
      from the model, which holds the pretrained weights by then.
    """

    priority = 'VERY_HIGH'

    def before_train(self, runner: Runner) -> None:
        model = _unwrap(runner)
        # Before the first step: a label beyond the table fails mid-step.
        check_label_range(runner.train_dataloader.dataset,
                          model.backbone.y_embedder.num_classes, 'training')
        taxonomy = runner.train_dataloader.dataset.metainfo.get('taxonomy')
        sub2super = model.backbone.y_embedder.sub2super.tolist()
        if taxonomy and taxonomy['sub2super'] != sub2super:
            raise RuntimeError(
                'the training data and the model disagree on the taxonomy '
                f"({len(taxonomy['sub2super'])} vs {len(sub2super)} "
                'subclasses, or another sub->super table): give '
                'model.backbone.sub2super the dataset\'s taxonomy spec')
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

    def before_save_checkpoint(self, runner: Runner, checkpoint: dict) -> None:
        model = _unwrap(runner)
        keep = set(delta_keys(model))
        checkpoint['state_dict'] = {
            k: v
            for k, v in checkpoint['state_dict'].items() if k in keep
        }
        checkpoint['meta']['peft'] = dict(trainable=model.trainable)

    def after_load_checkpoint(self, runner: Runner, checkpoint: dict) -> None:
        if 'peft' not in checkpoint.get('meta', {}):
            return
        state = checkpoint['state_dict']
        for name, value in _unwrap(runner).state_dict().items():
            state.setdefault(name, value)


@HOOKS.register_module()
class TrainableEMAHook(Hook):
    """Updates the model's EMA of its trainable parameters after each step.

    A hook rather than part of ``train_step``, because MMEngine's DDP wrapper
    runs its own train step and never calls the model's.
    """

    priority = 'NORMAL'

    def before_train(self, runner: Runner) -> None:
        model = _unwrap(runner)
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
        model.ema.update(model.backbone)
