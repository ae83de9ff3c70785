"""What the command-line tools share: argument types, under which a bad
value is an argparse usage error (exit status 2, naming the option and the
value) before anything loads, not a traceback or a hang later; and the
arguments and config loading of the tools that run the MMEngine Runner
(``tools/train.py``, ``tools/test.py``); and the ``--cfg-options``
arguments that one tool passes to another."""
import argparse
import os
import os.path as osp
from typing import Any, Dict, List

from mmengine.config import Config, DictAction

from .config import load_config

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'invalid int value: {text!r}') from None


def positive_int(text: str) -> int:
    """A count of at least 1 (images, batch size, steps, shards).

    Raises:
        argparse.ArgumentTypeError: For a non-integer, zero or negative
            value.
    """
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be at least 1, got {value}')
    return value


def non_negative_int(text: str) -> int:
    """A count that may be 0 (e.g. data-loader workers: 0 loads in the main
    process).

    Raises:
        argparse.ArgumentTypeError: For a non-integer or negative value.
    """
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'must be at least 0, got {value}')
    return value


def class_query(text: str) -> str:
    """A class id or name for ``tools/sample.py --classes``: not empty (an
    empty name would match the subclasses without a common name).

    Raises:
        argparse.ArgumentTypeError: For an empty or blank value.
    """
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f'empty class name {text!r}: give a class id, a subclass or a '
            'superclass name')
    return text


def add_config_arguments(parser: argparse.ArgumentParser,
                         work_dir_help: str) -> None:
    """The positional config file and ``--work-dir`` of a Runner tool.

    Args:
        parser (argparse.ArgumentParser): The tool's parser.
        work_dir_help (str): The help of ``--work-dir`` (what the tool
            writes there).
    """
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help=work_dir_help)


def add_runner_arguments(parser: argparse.ArgumentParser,
                         cfg_options_help: str = 'override config entries'
                         ) -> None:
    """``--cfg-options``, ``--launcher`` and ``--local-rank``, as the Runner
    tools take them.

    Args:
        parser (argparse.ArgumentParser): The tool's parser.
        cfg_options_help (str): The help of ``--cfg-options``.
    """
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, help=cfg_options_help)
    parser.add_argument(
        '--launcher', choices=list(LAUNCHERS), default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank (or --local_rank).
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_runner_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parses the command line and exports ``--local-rank`` as
    ``LOCAL_RANK`` where the launcher has not set it."""
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def load_runner_config(args: argparse.Namespace) -> Config:
    """The config of ``args.config`` with ``--cfg-options`` merged (see
    :func:`finediffusion.config.load_config`), its launcher and its work
    dir: ``--work-dir``, else the config's, else
    ``work_dirs/<config name>``.

    Raises:
        SystemExit: For an override that the config refuses.
    """
    try:
        cfg = load_config(args.config, args.cfg_options)
    except ValueError as error:
        raise SystemExit(f'error: {error}')
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def cfg_options(options: Dict[str, Any]) -> List[str]:
    """``--cfg-options`` arguments, ``key=value``, that MMEngine's
    ``DictAction`` parses back to ``options``.

    Args:
        options (dict): Dotted config keys to values: numbers, strings,
            None, booleans, or lists and tuples of them (written as
            ``[a,b]``, read back as lists).

    Returns:
        list[str]: One argument per option.
    """
    return [f'{key}={_option_text(value)}' for key, value in options.items()]


def _option_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return '[' + ','.join(_option_text(v) for v in value) + ']'
    return str(value)
