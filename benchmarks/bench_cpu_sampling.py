"""Sampling throughput of small TieredDiTs on the CPU, fine-grained CFG.

Prints one JSON line per case. Example:
    python benchmarks/bench_cpu_sampling.py
"""
import json
import time

import torch

import finediffusion  # noqa: F401,I001  (compatibility fixes first)
from finediffusion.models import FineDiffusion, TieredDiT
from mmagic.utils import register_all_modules

CASES = [
    # name, arch, patch, input size, batch
    ('tiny (demo config)', dict(depth=2, hidden_size=64, num_heads=4), 4, 16,
     16),
    ('DiT-S/4, 32 px', 'S', 4, 32, 16),
]


def main() -> None:
    register_all_modules(init_default_scope=True)
    torch.manual_seed(0)
    for name, arch, patch, size, batch in CASES:
        model = FineDiffusion(
            backbone=TieredDiT(num_classes=100,
                               taxonomy=[i // 10 for i in range(100)],
                               arch=arch, patch_size=patch, input_size=size,
                               in_channels=3),
            data_preprocessor=None).eval()
        labels = torch.randint(0, 100, (batch, ))
        for sampler, steps in ((None, 250),
                               (dict(type='DPMSolverMultistepScheduler'), 25)):
            start = time.perf_counter()
            model.sample(labels, num_sampling_steps=steps, scheduler=sampler)
            seconds = time.perf_counter() - start
            print(json.dumps(dict(
                model=name, sampler=sampler['type'] if sampler else 'ddpm',
                steps=steps, batch=batch, threads=torch.get_num_threads(),
                img_per_s=round(batch / seconds, 2))), flush=True)


if __name__ == '__main__':
    main()
