"""Finding pretrained metric weights on disk; this project never downloads."""
import os.path as osp
from typing import Optional


def find_weights(path: Optional[str], default: str, what: str,
                 argument: str) -> str:
    """``path`` if given, else ``default``; fails clearly when absent.

    Args:
        path (str, optional): The user's path.
        default (str): Where the file is looked for otherwise (a cache).
        what (str): What the file is, for the message.
        argument (str): The config argument that sets ``path``.

    Raises:
        FileNotFoundError: Naming the file, where it was looked for and how
            to provide it.
    """
    wanted = path or default
    if not osp.isfile(wanted):
        raise FileNotFoundError(
            f'{what}: weights file {osp.basename(wanted)} not found at '
            f'{wanted}. Weights are never downloaded here: copy the file '
            f'there or set {argument}=PATH in the metric config.')
    return wanted
