"""Merges the official DiT weights and a FineDiffusion delta into one file.

Writes the full backbone state dict (safetensors) of the sampler-ready model.

Example:
    python tools/merge_delta.py configs/finediffusion_inat.py delta.safetensors \\
        merged.safetensors --base checkpoints/DiT-XL-2-256x256.pt
"""
import argparse

import finediffusion  # noqa: F401  (compatibility fixes before mmengine use)
from finediffusion.config import load_config
from finediffusion.inference import build_from_delta
from finediffusion.delta import check_output
from safetensors import safe_open
from safetensors.torch import save_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='the training config')
    parser.add_argument('delta', help='delta from tools/export_delta.py')
    parser.add_argument('out', help='output (.safetensors)')
    parser.add_argument(
        '--base', help='official DiT checkpoint (default: the config\'s '
        'model.backbone.pretrained)')
    args = parser.parse_args()
    try:
        cfg = load_config(args.config)
        base = args.base or cfg.model.backbone.get('pretrained')
        check_output(args.out, [args.config, args.delta, base])
        model = build_from_delta(cfg, args.delta, base=args.base)
    except ValueError as error:
        raise SystemExit(f'error: {error}')
    state = {k: v.contiguous() for k, v in model.backbone.state_dict().items()}
    save_file(state, args.out)
    with safe_open(args.delta, framework='pt') as f:
        weights = (f.metadata() or {}).get('weights', 'unknown')
    print(f'wrote {len(state)} tensors to {args.out} (the delta holds '
          f'{weights} weights)')


if __name__ == '__main__':
    main()
