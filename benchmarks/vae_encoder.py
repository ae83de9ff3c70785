"""The SD-VAE encoder's own speed on this GPU (a diagnosis of
tools/cache_latents.py and of image configs, not a product path).

Times ``encode_posterior`` (the model's and the cache writer's encoding) on
a random SD-VAE-architecture ``AutoencoderKL`` (none can be downloaded
here) at 256 px: bf16 autocast in the contiguous and channels-last layouts,
with and without ``cudnn.benchmark``, bf16 weights, and on CUDA the encoder
compiled in place as the tools compile it. Counts the
encoder's matrix and convolution FLOPs per image with
``torch.utils.flop_counter`` and prints one JSON line: per layout, images
per second (one VAE call an image; tools/cache_latents.py makes two, both
flips) and TFLOP/s.

Example:
    python benchmarks/vae_encoder.py --batch-size 64
"""
import argparse
import copy
import json
import tempfile
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import finediffusion  # noqa: F401,I001  (compatibility fixes first)
from finediffusion.models.finediffusion import encode_posterior
from finediffusion.stand_ins import write_sd_vae


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--size', type=int, default=256, help='pixels')
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--tiny', action='store_true',
                        help='a few-channel VAE (a CPU check)')
    return parser.parse_args()


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize()


def main() -> None:
    from diffusers import AutoencoderKL
    args = parse_args()
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    with tempfile.TemporaryDirectory() as folder:
        write_sd_vae(folder, tiny=args.tiny)
        vae = AutoencoderKL.from_pretrained(folder)
    vae = vae.to(device).eval().requires_grad_(False)
    with FlopCounterMode(display=False) as counter:
        encode_posterior(vae, torch.randn(1, 3, args.size, args.size,
                                          device=device))
    gflop = counter.get_total_flops() / 1e9
    report = dict(device=(torch.cuda.get_device_name() if device.type ==
                          'cuda' else 'cpu'), batch_size=args.batch_size,
                  size=args.size, encoder_gflop_per_image=round(gflop, 3))
    images = torch.randn(args.batch_size, 3, args.size, args.size,
                         device=device)

    @torch.no_grad()
    def measure(name: str, model: nn.Module, dtype: torch.dtype,
                layout: torch.memory_format, autocast: bool) -> None:
        nn.Module.to(model, memory_format=layout)
        x = images.to(dtype).contiguous(memory_format=layout)

        def step():
            with torch.autocast(device.type, torch.bfloat16,
                                enabled=autocast):
                encode_posterior(model, x)

        for _ in range(3):
            step()
        _sync(device)
        began = time.perf_counter()
        for _ in range(args.iters):
            step()
        _sync(device)
        seconds = (time.perf_counter() - began) / args.iters
        report[name] = dict(
            img_per_s=round(args.batch_size / seconds, 1),
            tflop_per_s=round(args.batch_size * gflop / seconds / 1e3, 2))

    for benchmark in (False, True):
        torch.backends.cudnn.benchmark = benchmark
        suffix = '_cudnn_benchmark' if benchmark else ''
        measure(f'autocast_contiguous{suffix}', vae, torch.float32,
                torch.contiguous_format, True)
        measure(f'autocast_channels_last{suffix}', vae, torch.float32,
                torch.channels_last, True)
    if device.type == 'cuda':
        # As tools/cache_latents.py and the image configs compile it (on the
        # CPU inductor builds C++ for minutes).
        compiled = copy.deepcopy(vae)
        compiled.encoder.compile(dynamic=False)
        measure('autocast_contiguous_cudnn_benchmark_compiled', compiled,
                torch.float32, torch.contiguous_format, True)
    measure('bf16_weights_channels_last_cudnn_benchmark',
            vae.to(torch.bfloat16), torch.bfloat16, torch.channels_last,
            False)
    print(json.dumps(report))


if __name__ == '__main__':
    main()
