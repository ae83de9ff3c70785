"""Argument types shared by the command-line tools: a bad value is an
argparse usage error (exit status 2, naming the option and the value)
before anything loads, not a traceback or a hang later. Also the
``--cfg-options`` arguments that one tool passes to another."""
import argparse
from typing import Any, Dict, List


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
