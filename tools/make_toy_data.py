"""Writes the toy two-tier image set that the tiny configs train on.

Example:
    python tools/make_toy_data.py data/toy_hierarchy
"""
import argparse

from finediffusion.cli import positive_int
from finediffusion.datasets import write_toy_hierarchy


def main() -> None:
    """Writes the toy set from the command line's sizes and seed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root', help='output folder')
    parser.add_argument('--superclasses', type=positive_int, default=2)
    parser.add_argument('--subclasses-per-super', type=positive_int, default=2)
    parser.add_argument('--images-per-class', type=positive_int, default=8)
    parser.add_argument('--size', type=positive_int, default=16)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    sub2super = write_toy_hierarchy(args.root, args.superclasses,
                                    args.subclasses_per_super,
                                    args.images_per_class, args.size,
                                    args.seed)
    print(f'wrote {len(sub2super)} subclasses to {args.root}; '
          f'sub2super = {sub2super}')


if __name__ == '__main__':
    main()
