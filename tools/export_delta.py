"""Exports the trained tensors of a FineDiffusion checkpoint as a delta.

The delta (safetensors) holds the trainable backbone tensors (EMA weights by
default; the raw ones of a run without EMA, which the output and the
metadata `weights` say) and the taxonomy; with the official DiT checkpoint it
rebuilds the model (tools/merge_delta.py,
finediffusion.inference.build_from_delta).

Example:
    python tools/export_delta.py work_dirs/run/iter_10000.pth delta.safetensors
"""
import argparse
import os.path as osp

import finediffusion  # noqa: F401  (compatibility fixes before mmengine use)
from finediffusion.delta import export_delta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('checkpoint', help='training checkpoint (.pth)')
    parser.add_argument('out', help='output delta (.safetensors)')
    parser.add_argument(
        '--raw', action='store_true', help='export the raw, not EMA, weights')
    args = parser.parse_args()
    try:
        meta = export_delta(args.checkpoint, args.out, use_ema=not args.raw)
    except ValueError as error:
        raise SystemExit(f'error: {error}')
    weights = f'{meta["weights"]} weights'
    if not args.raw and meta['weights'] == 'raw':
        weights += (' (the checkpoint holds no EMA: its run had '
                    'model.ema_decay=None)')
    print(f'wrote {args.out} ({osp.getsize(args.out) / 2**20:.1f} MiB, '
          f'{weights}, iteration {meta["iter"]})')


if __name__ == '__main__':
    main()
