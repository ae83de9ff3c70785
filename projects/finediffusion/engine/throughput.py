"""Throughput of a training run, measured inside the Runner, and DiT's
EMA of every parameter for the upstream-style reference."""
import json
import os.path as osp
import time
from collections import Counter
from typing import List, Optional

import torch
from mmengine.dist import get_world_size, is_main_process
from mmengine.hooks import Hook
from torch.autograd import DeviceType

from mmagic.registry import HOOKS
from ..models.peft import trainable_count
from .hooks import _unwrap

# Operators whose input dtype is the precision of the backbone's matrix
# products (linear layers, attention, the patch embedding).
MATRIX_OPS = ('aten::mm', 'aten::addmm', 'aten::bmm', 'aten::baddbmm',
              'aten::_scaled_mm', 'aten::cudnn_convolution',
              'aten::_convolution', 'aten::mkldnn_convolution',
              'aten::_scaled_dot_product_flash_attention',
              'aten::_scaled_dot_product_efficient_attention',
              'aten::_scaled_dot_product_cudnn_attention',
              'aten::_scaled_dot_product_flash_attention_for_cpu')


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _compiled(module) -> Optional[bool]:
    """Whether ``module`` was compiled in place (None without a module)."""
    if module is None:
        return None
    return getattr(module, '_compiled_call_impl', None) is not None


@HOOKS.register_module()
class ThroughputHook(Hook):
    """Writes ``throughput.json`` to the work dir when training ends: images
    per second over the iterations after ``warmup``, the share of each
    iteration spent waiting for data, peak GPU memory, the trainable share
    of the backbone, whether it and the VAE encoder are compiled, the
    training loss of every iteration, the time of the first iteration
    (``first_iter_s``, with compilation), and from the profiler, over
    iteration ``warmup`` with its backward, the dtypes the matrix products
    ran in and the operators that took the most device time (``profile``:
    name, milliseconds, share).

    Each iteration is timed to its end on the device (a synchronisation per
    iteration, which the optimizer's finiteness check makes anyway). The
    profiled iteration and the profiler's own processing count in neither
    the iteration nor the waiting times.

    Args:
        warmup (int): Iterations left out of the figures (compilation,
            cuDNN's autotuning, allocator growth). Defaults to 10.
        out (str): File name in the work dir. Defaults to
            'throughput.json'.
        top_ops (int): Operators listed in ``profile``. Defaults to 15.
    """

    priority = 'VERY_LOW'

    def __init__(self, warmup: int = 10, out: str = 'throughput.json',
                 top_ops: int = 15) -> None:
        self.warmup = warmup
        self.out = out
        self.top_ops = top_ops
        self.iter_s: List[float] = []
        self.data_s: List[float] = []
        self.losses: List[float] = []
        self.matrix_dtypes: Counter = Counter()
        self.profile: List[list] = []
        self._profiler: Optional[torch.profiler.profile] = None
        self._end = None
        self.first_iter_s: Optional[float] = None
        self.peak_memory = 0

    def before_train(self, runner) -> None:
        _sync()
        self._end = time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        self._fetched = time.perf_counter()
        if runner.iter == self.warmup:
            self._profiler = torch.profiler.profile(record_shapes=True)
            self._profiler.__enter__()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        _sync()
        now = time.perf_counter()
        if self.first_iter_s is None:
            # From before_train: the loop's start to the first end.
            self.first_iter_s = round(now - self._end, 2)
        if torch.cuda.is_available():
            # Read every iteration: MMEngine's log processor resets the
            # peak each time it logs (before this hook's turn), so the peak
            # left at the end covers only the iterations after the last log.
            self.peak_memory = max(self.peak_memory,
                                   torch.cuda.max_memory_allocated())
        if isinstance(outputs, dict) and 'loss' in outputs:
            self.losses.append(round(float(outputs['loss']), 6))
        if self._profiler is not None:
            self._profiler.__exit__(None, None, None)
            self._read_profile(self._profiler)
            self._profiler = None
        elif runner.iter >= self.warmup:
            self.iter_s.append(now - self._end)
            self.data_s.append(self._fetched - self._end)
        # After the profiler's processing (seconds), which is not the
        # loader's time.
        self._end = time.perf_counter()

    def _read_profile(self, profiler: torch.profiler.profile) -> None:
        # The recorded events themselves: they carry input dtypes on every
        # torch 2 (FunctionEvent.input_dtypes only from torch 2.12).
        results = getattr(profiler.profiler, 'kineto_results', None)
        for event in results.events() if results is not None else []:
            if event.name() in MATRIX_OPS:
                dtypes = {d for d in event.dtypes()
                          if d and not d.startswith('Scalar')}
                self.matrix_dtypes['/'.join(sorted(dtypes)) or 'unknown'] += 1
        # On a GPU the kernels (device time); on the CPU the operators'
        # self time. Each is counted once.
        gpu = torch.cuda.is_available()
        key = 'self_device_time_total' if gpu else 'self_cpu_time_total'
        # Ranges of compiled graphs ('## Call CompiledFxGraph ... ##') hold
        # kernels listed on their own: left out, not counted twice.
        averages = [a for a in profiler.key_averages()
                    if (a.device_type != DeviceType.CPU) == gpu
                    and not a.key.startswith('## ')]
        total = sum(getattr(a, key) for a in averages) or 1
        for average in sorted(averages, key=lambda a: -getattr(a, key))[
                :self.top_ops]:
            self.profile.append([average.key[:100],
                                 round(getattr(average, key) / 1e3, 3),
                                 round(getattr(average, key) / total, 4)])

    def after_train(self, runner) -> None:
        if not self.iter_s:
            return
        model = _unwrap(runner)
        batch = runner.train_dataloader.batch_size * get_world_size()
        steady = sorted(self.iter_s)[len(self.iter_s) // 2]
        trainable, total = trainable_count(model.backbone)
        compile_options = getattr(model, 'compile_options', None)
        report = dict(
            iterations=len(self.iter_s),
            batch_size=batch,
            world_size=get_world_size(),
            img_per_s=round(batch / steady, 1),
            img_per_s_per_gpu=round(batch / get_world_size() / steady, 1),
            median_iter_s=round(steady, 4),
            first_iter_s=self.first_iter_s,
            data_time_share=round(sum(self.data_s) / sum(self.iter_s), 4),
            peak_memory_gib=(round(self.peak_memory / 2**30, 2)
                             if torch.cuda.is_available() else None),
            trainable_share=round(trainable / total, 5),
            compiled=_compiled(model.backbone),
            vae_encoder_compiled=_compiled(
                getattr(getattr(model, 'vae', None), 'encoder', None)),
            compile_devices=(list(compile_options['devices'])
                             if compile_options else []),
            float8_layers=len(getattr(model, 'float8_layers', None) or []),
            matrix_dtypes=dict(self.matrix_dtypes),
            profile=self.profile,
            loss=self.losses,
            optim_wrapper=type(runner.optim_wrapper).__name__)
        runner.logger.info(f'throughput: {json.dumps(report)}')
        if is_main_process():
            with open(osp.join(runner.work_dir, self.out), 'w') as f:
                json.dump(report, f, indent=1)


@HOOKS.register_module()
class FullEMAHook(Hook):
    """DiT's EMA of every backbone parameter, one tensor at a time after
    each step, as the upstream training script updates it; the average is
    not saved. The upstream-style reference of ``tools/benchmark.py``
    (FineDiffusion's own EMA averages the trainable tensors only).

    Args:
        decay (float): Defaults to 0.9999.
    """

    priority = 'LOW'

    def __init__(self, decay: float = 0.9999) -> None:
        self.decay = decay

    def before_train(self, runner) -> None:
        backbone = _unwrap(runner).backbone
        self.params = list(backbone.parameters())
        self.average = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        for average, param in zip(self.average, self.params):
            average.mul_(self.decay).add_(param, alpha=1 - self.decay)
