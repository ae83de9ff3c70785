"""ThroughputHook: what it measures of a training loop."""
import time
from types import SimpleNamespace

import torch

from finediffusion.engine.throughput import ThroughputHook


def _run(hook: ThroughputHook, iters: int) -> None:
    """Drives the hook as the Runner's training loop does, the batch taken
    at once after each iteration (a loader that keeps up)."""
    runner = SimpleNamespace(iter=0)
    weight = torch.randn(64, 64, requires_grad=True)
    hook.before_train(runner)
    for i in range(iters):
        runner.iter = i
        hook.before_train_iter(runner, i)
        loss = (torch.randn(32, 64) @ weight).square().mean()
        loss.backward()
        hook.after_train_iter(runner, i, outputs=dict(loss=loss.detach()))


def test_profiler_processing_is_not_waiting_for_data(monkeypatch):
    # The profiler's processing after the profiled iteration took seconds
    # on an H200 and was counted as the next iteration's wait for data.
    events = torch.profiler.profile.events

    def slow(self, *args, **kwargs):
        time.sleep(0.5)
        return events(self, *args, **kwargs)

    monkeypatch.setattr(torch.profiler.profile, 'events', slow)
    hook = ThroughputHook(warmup=1)
    _run(hook, 4)
    assert len(hook.iter_s) == 2  # iterations 2 and 3; 0 warms up, 1 profiled
    assert max(hook.data_s) < 0.1, hook.data_s


def test_losses_and_the_profile_are_recorded():
    hook = ThroughputHook(warmup=1, top_ops=3)
    _run(hook, 3)
    assert len(hook.losses) == 3 and all(x > 0 for x in hook.losses)
    # The matrix product leads the CPU profile of this loop.
    names = [name for name, ms, share in hook.profile]
    assert len(hook.profile) == 3 and 'aten::mm' in names, hook.profile
    assert all(0 < share <= 1 and ms >= 0 for _, ms, share in hook.profile)


def test_the_first_iteration_is_timed_apart():
    # Compilation happens in the first iteration: its time is reported and
    # left out of the steady figures.
    hook = ThroughputHook(warmup=1)
    runner = SimpleNamespace(iter=0)
    hook.before_train(runner)
    for i in range(4):
        runner.iter = i
        hook.before_train_iter(runner, i)
        time.sleep(0.3 if i == 0 else 0.01)
        hook.after_train_iter(runner, i, outputs=dict(loss=torch.ones(())))
    assert hook.first_iter_s >= 0.3
    assert max(hook.iter_s) < 0.3, hook.iter_s


def test_the_peak_memory_outlives_the_loggers_resets(monkeypatch):
    # MMEngine's log processor resets the peak whenever it logs (before this
    # hook's turn): a run that ended on a logging iteration had reported
    # its parameters' memory only (10.7 GiB for full fine-tuning at batch
    # 256 on an H200).
    gib = 2**30
    memory = dict(peak=0)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'synchronize', lambda: None)
    monkeypatch.setattr(torch.cuda, 'reset_peak_memory_stats',
                        lambda: memory.update(peak=10 * gib))
    monkeypatch.setattr(torch.cuda, 'max_memory_allocated',
                        lambda device=None: memory['peak'])
    hook = ThroughputHook(warmup=0)
    runner = SimpleNamespace(iter=0)
    hook.before_train(runner)
    for i in range(4):
        runner.iter = i + 1   # no profiled iteration
        hook.before_train_iter(runner, i)
        memory['peak'] = 60 * gib   # the step's activations
        if i % 2:
            torch.cuda.reset_peak_memory_stats()   # the logger
        hook.after_train_iter(runner, i, outputs=dict(loss=torch.ones(())))
    assert torch.cuda.max_memory_allocated() == 10 * gib
    assert hook.peak_memory == 60 * gib


def test_compiled_graph_ranges_are_not_counted_as_kernels(monkeypatch):
    # '## Call CompiledFxGraph ... ##' ranges hold kernels that the profile
    # lists on their own: counted, they took half of an H200 profile.
    averages = torch.profiler.profile.key_averages

    def with_a_range(self, *args, **kwargs):
        events = list(averages(self, *args, **kwargs))
        graph = max(events, key=lambda a: a.self_cpu_time_total)
        fake = SimpleNamespace(key='## Call CompiledFxGraph abc ##',
                               device_type=graph.device_type,
                               self_cpu_time_total=10**9)
        return events + [fake]

    monkeypatch.setattr(torch.profiler.profile, 'key_averages', with_a_range)
    hook = ThroughputHook(warmup=1, top_ops=3)
    _run(hook, 3)
    names = [name for name, ms, share in hook.profile]
    assert not any(name.startswith('## ') for name in names), names
    assert 'aten::mm' in names


def test_matrix_dtypes_are_read_from_the_recorded_events(monkeypatch):
    # torch 2.11's FunctionEvent has no input_dtypes: read that way, an
    # H200 run reported 'unknown' for every matrix product.
    monkeypatch.setattr(torch.profiler.profile, 'events', lambda self: [])
    hook = ThroughputHook(warmup=1)
    runner = SimpleNamespace(iter=0)
    weight = torch.randn(64, 64)
    hook.before_train(runner)
    for i in range(3):
        runner.iter = i
        hook.before_train_iter(runner, i)
        with torch.autocast('cpu', torch.bfloat16):
            loss = (torch.randn(32, 64) @ weight).float().square().mean()
            # A convolution's stride and padding are ScalarLists, not
            # dtypes of its matrix product.
            loss = loss + torch.nn.functional.conv2d(
                torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3)).mean()
        hook.after_train_iter(runner, i, outputs=dict(loss=loss))
    assert set(hook.matrix_dtypes) == {'c10::BFloat16'}, hook.matrix_dtypes
