"""Training and sampling throughput of DiT-XL/2-256 FineDiffusion on a GPU.

Runs, side by side in one process, the upstream-style settings (eager, TF32,
batch 32) and ours (bf16 autocast, torch.compile, fused AdamW, large batch),
for full fine-tuning and PEFT, then sampling with fine-grained CFG (250-step
respaced DDPM and 25-step DPM-Solver++), VAE decode included. Weights are
random in the official layout (throughput does not depend on their values).
Prints one JSON object and writes it to --out.

Example:
    python benchmarks/bench_gpu.py --out bench.json
"""
import argparse
import json
import time

import torch
from diffusers import AutoencoderKL

import finediffusion  # noqa: F401,I001  (compatibility fixes first)
from finediffusion.models import FineDiffusion, FineGrainedCFG, TieredDiT
from mmagic.utils import register_all_modules

NUM_CLASSES, NUM_SUPER = 10_000, 11


def build(trainable: str) -> FineDiffusion:
    # Initialized on the GPU: 685M parameters take long on the CPU.
    with torch.device('cuda'):
        backbone = TieredDiT(
            num_classes=NUM_CLASSES,
            sub2super=[i % NUM_SUPER for i in range(NUM_CLASSES)],
            arch='XL')
        return FineDiffusion(
            backbone=backbone, trainable=trainable,
            data_preprocessor=None).cuda()


def sd_vae() -> AutoencoderKL:
    """The SD-VAE architecture (sd-vae-ft-ema config), random weights."""
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=('DownEncoderBlock2D', ) * 4,
        up_block_types=('UpDecoderBlock2D', ) * 4,
        block_out_channels=(128, 256, 512, 512), layers_per_block=2,
        norm_num_groups=32, sample_size=256).cuda().eval()


def timed(fn, iters: int, warmup: int) -> float:
    """Seconds per call, after warm-up, synchronized."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters


def train_case(trainable: str, batch: int, bf16: bool, compile_: bool,
               iters: int) -> dict:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model = build(trainable).train()
    params = [p for p in model.parameters() if p.requires_grad]
    # Upstream DiT: AdamW(lr 1e-4, wd 0) with foreach; ours: fused.
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0,
                                  fused=compile_)
    loss_fn = model.latent_loss
    if compile_:
        loss_fn = torch.compile(loss_fn)
    x0 = torch.randn(batch, 4, 32, 32, device='cuda')
    labels = torch.randint(0, NUM_CLASSES, (batch, ), device='cuda')

    def step():
        with torch.autocast('cuda', torch.bfloat16, enabled=bf16):
            loss = loss_fn(x0, labels)['loss']
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.ema.update(model.backbone)

    t0 = time.perf_counter()
    step()
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    seconds = timed(step, iters, warmup=3)
    result = dict(
        trainable=trainable, batch=batch,
        precision='bf16' if bf16 else 'tf32', compiled=compile_,
        img_per_s=round(batch / seconds, 1),
        peak_mem_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
        first_step_s=round(first, 1),
        trainable_params=sum(p.numel() for p in params))
    return result


def sample_case(model: FineDiffusion, vae: AutoencoderKL, batch: int,
                sampler, steps: int, compile_: bool, bf16_weights: bool) -> dict:
    """Autocast over float32 weights (upstream style), or weights in bf16."""
    dtype = torch.bfloat16 if bf16_weights else torch.float32
    model.to(dtype)
    model.vae = vae.to(dtype)
    backbone = model.backbone
    if compile_:
        # Attribute access (y_embedder, grid, ...) passes through.
        model.backbone = torch.compile(backbone)
    labels = torch.randint(0, NUM_CLASSES, (batch, ), device='cuda')

    def run():
        with torch.autocast('cuda', torch.bfloat16, enabled=not bf16_weights):
            return model.sample(labels, num_steps=steps, sampler=sampler,
                                use_ema=False)

    t0 = time.perf_counter()
    images = run()
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    seconds = timed(run, iters=1, warmup=0)
    model.backbone = backbone
    assert torch.isfinite(images).all()
    return dict(
        sampler=sampler['type'] if sampler else 'ddpm-respaced',
        steps=steps, batch=batch, compiled=compile_, guidance='fine_grained',
        weights='bf16' if bf16_weights else 'fp32+autocast',
        img_per_s=round(batch / seconds, 2), first_call_s=round(first, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='bench.json')
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--parts', default='train,sample')
    args = parser.parse_args()
    register_all_modules(init_default_scope=True)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    out = dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
               train=[], sample=[])

    def record(key, case, fn):
        try:
            result = fn(*case)
        except torch.OutOfMemoryError as error:
            result = dict(case=repr(case), error=str(error)[:200])
            torch.cuda.empty_cache()
        out[key].append(result)
        print(json.dumps(result), flush=True)
        with open(args.out, 'w') as f:
            json.dump(out, f, indent=1)

    if 'train' in args.parts:
        for case in [
                # upstream-style: eager, TF32, batch 32
                ('full', 32, False, False),
                ('finediffusion', 32, False, False),
                ('finediffusion', 256, True, False),
                # ours
                ('full', 256, True, True),
                ('finediffusion', 256, True, True),
        ]:
            record('train', case,
                   lambda *c: train_case(*c, iters=args.iters))
    if 'sample' in args.parts:
        model = build('finediffusion').eval()
        model.guidance = FineGrainedCFG(scale=4.0)
        vae = sd_vae()
        dpm = dict(type='DPMSolverMultistepScheduler')
        for case in [(8, None, 250, False, False),
                     (256, None, 250, False, True),
                     (256, None, 250, True, True),
                     (256, dpm, 25, True, True)]:
            record('sample', case, lambda *c: sample_case(model, vae, *c))
    print(json.dumps(out))


if __name__ == '__main__':
    main()
