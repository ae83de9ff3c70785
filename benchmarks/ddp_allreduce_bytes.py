"""Bytes DDP all-reduces per step for DiT-XL/2 (10,000 + 11 class rows):
FineDiffusion's PEFT set against full fine-tuning, read from the buckets of
a real DistributedDataParallel (one gloo process on the CPU; no GPU).

Prints one JSON object. Example:
    python benchmarks/ddp_allreduce_bytes.py
"""
import json
import os

import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import finediffusion  # noqa: F401,I001  (compatibility fixes first)
from finediffusion.models import FineDiffusion, TieredDiT
from mmagic.utils import register_all_modules


def bucket_bytes(trainable: str) -> dict:
    model = FineDiffusion(
        backbone=TieredDiT(num_classes=10000,
                           taxonomy=[i % 11 for i in range(10000)],
                           arch='XL'),
        trainable=trainable, ema_decay=None, data_preprocessor=None)
    ddp = DistributedDataParallel(model)
    data = ddp._get_ddp_logging_data()
    sizes = [int(s) for s in str(data['bucket_sizes']).split(', ')]
    grads = sum(p.numel() * p.element_size() for p in model.parameters()
                if p.requires_grad)
    return dict(trainable=trainable, allreduce_bytes_per_step=sum(sizes),
                grad_bytes=grads)


def main() -> None:
    register_all_modules(init_default_scope=True)
    os.environ.setdefault('MASTER_ADDR', '127.0.0.1')
    os.environ.setdefault('MASTER_PORT', '29533')
    dist.init_process_group('gloo', rank=0, world_size=1)
    peft, full = bucket_bytes('finediffusion'), bucket_bytes('full')
    print(json.dumps(dict(
        peft=peft, full=full,
        ratio=round(peft['allreduce_bytes_per_step'] /
                    full['allreduce_bytes_per_step'], 5))))
    dist.destroy_process_group()


if __name__ == '__main__':
    main()
