"""MMEngine's Runner writing checkpoints atomically and reading them
weights-only."""
import os


def _atomic(save_checkpoint):
    """MMEngine's ``save_checkpoint``, writing ``<file>.<pid>.partial`` then
    renaming.

    A run killed while writing leaves the previous checkpoints and a
    ``.partial`` file, never a truncated checkpoint under a real name. The
    process id keeps two writers of one name (two runs on one work dir, if
    one bypasses :mod:`finediffusion.engine.work_dir_lock`) from renaming
    each other's files.
    """

    def atomic_save_checkpoint(checkpoint: dict, filename: str, *args,
                               **kwargs) -> None:
        if '://' in str(filename):  # remote backends keep their semantics
            return save_checkpoint(checkpoint, filename, *args, **kwargs)
        partial = f'{filename}.{os.getpid()}.partial'
        save_checkpoint(checkpoint, partial, *args, **kwargs)
        os.replace(partial, filename)

    atomic_save_checkpoint.atomic = True
    return atomic_save_checkpoint


def fix_runner() -> None:
    """The fixes of ``mmengine.runner``, applied once per process.

    - Checkpoints are written atomically (:func:`_atomic`): MMEngine writes
      them in place, so a killed run can leave a truncated ``iter_N.pth``
      that ``--resume`` then fails on. The Runner calls the name it
      imported, which is replaced.
    - Every checkpoint MMEngine reads is read with ``weights_only=True``
      (:mod:`finediffusion.weights_only`): its ``torch.load`` calls pass no
      ``weights_only``, so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` would
      unpickle any file, and its URL loader defaults to full unpickling.
    """
    from mmengine.runner import checkpoint as mmengine_checkpoint
    from mmengine.runner import runner as mmengine_runner

    from ..weights_only import TorchLoadingWeightsOnly, load_url_weights_only
    if not getattr(mmengine_runner.save_checkpoint, 'atomic', False):
        mmengine_runner.save_checkpoint = _atomic(
            mmengine_runner.save_checkpoint)
    mmengine_checkpoint.torch = TorchLoadingWeightsOnly('torch')
    mmengine_checkpoint.load_url = load_url_weights_only
