"""Configs: loading with overrides, and the shared specs that configs copy.

A config names a spec once at its top level (``data_root``, ``taxonomy``,
``cache``, ``train_pipeline``, ...) and copies it where it is used: the
model's ``backbone.sub2super`` and the datasets read ``taxonomy``. MMEngine
copies when the file is parsed, so a later change of the spec alone, by a
child config (``taxonomy = dict(super_rank='family')``) or by
``--cfg-options taxonomy.super_rank=family``, would reach none of the
copies. Configs therefore record each copy and what it copied::

    copied_specs = {
        'model.backbone.sub2super': dict(spec='taxonomy', value=taxonomy),
    }

and :func:`apply_copied_specs`, which every tool runs after the overrides
(:func:`load_config`), carries each changed part of a spec into the copies
that still hold what they copied; a copy that was changed itself (a test
set's ``ann_file='val.json'``, a path a script points elsewhere) keeps its
value. A changed part that no copy takes is refused as having no effect.
"""
import copy
from typing import Any, Dict, List, Optional

from mmengine.config import Config
from mmengine.logging import print_log

RECORDS = 'copied_specs'
_MISSING = object()


def load_config(path: str,
                cfg_options: Optional[Dict[str, Any]] = None) -> Config:
    """A config file with ``--cfg-options`` merged and its shared specs
    carried into their copies (:func:`apply_copied_specs`).

    Args:
        path (str): The config file.
        cfg_options (dict, optional): Dotted keys to values, as MMEngine's
            ``DictAction`` parses ``--cfg-options``.

    Returns:
        Config: The config the tools run.

    Raises:
        ValueError: From :func:`apply_copied_specs`.
    """
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    carried = apply_copied_specs(cfg)
    if carried:
        print_log(f'{path}: carried {"; ".join(carried)}', 'current')
    return cfg


def _step(tree: Any, key: str) -> Any:
    """``tree[key]``, a digit key indexing a list (as ``--cfg-options``
    paths such as ``val_evaluator.metrics.0.inception_path`` do)."""
    if isinstance(tree, (list, tuple)):
        return tree[int(key)] if key.isdigit() and int(key) < len(
            tree) else _MISSING
    if isinstance(tree, (dict, Config)) and key in tree:
        return tree[key]
    return _MISSING


def _get(tree: Any, path: str) -> Any:
    for key in path.split('.'):
        tree = _step(tree, key)
        if tree is _MISSING:
            return _MISSING
    return tree


def _set(tree: Config, path: str, value: Any) -> None:
    *parents, last = path.split('.')
    for key in parents:
        tree = _step(tree, key)
    if isinstance(tree, list):
        tree[int(last)] = value
    else:
        tree[last] = value


def _plain(value: Any) -> Any:
    """A value as plain dicts and lists, for comparisons: a tuple and the
    list that a dumped and reloaded config holds for it are one value."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _changes(recorded: Any, spec: Any, entry: Any) -> Dict[str, tuple]:
    """The parts of ``spec`` changed since ``recorded`` was copied, as
    {key: (new value, whether ``entry`` still holds the recorded one)};
    key '' is the whole value, for a spec that is not a dict."""
    if not (isinstance(recorded, dict) and isinstance(spec, dict)):
        if _plain(spec) == _plain(recorded):
            return {}
        return {'': (spec, _plain(entry) == _plain(recorded))}
    changes = {}
    for key in list(recorded) + [k for k in spec if k not in recorded]:
        old, new = recorded.get(key, _MISSING), spec.get(key, _MISSING)
        if _plain(old) != _plain(new):
            held = (entry.get(key, _MISSING)
                    if isinstance(entry, dict) else entry)
            changes[key] = (new, _plain(held) == _plain(old))
    return changes


def _carry(cfg: Config, records: dict, carried: List[str]) -> tuple:
    """One pass of :func:`apply_copied_specs` over the records: carries
    each changed part of a spec into the copies that still hold what they
    copied (appending to ``carried``) and returns (parts taken by a copy,
    parts refused by copies that set their own value, whether anything
    changed), the parts as {(spec, key): [paths]}."""
    taken: Dict[tuple, List[str]] = {}
    refusing: Dict[tuple, List[str]] = {}
    changed = False
    for path, record in records.items():
        name = record['spec']
        if name not in cfg:
            raise ValueError(f'{RECORDS}[{path!r}] copies {name!r}, '
                             'which the config does not define')
        entry = _get(cfg, path)
        if entry is _MISSING:
            continue  # removed on purpose (e.g. no test set)
        spec = cfg[name]
        for key, (value, held) in _changes(record['value'], spec,
                                           entry).items():
            part = (name, key)
            current = (entry.get(key, _MISSING)
                       if key and isinstance(entry, dict) else entry)
            if held:
                changed = True
                carried.append(f'{name}{"." + key if key else ""} -> {path}')
                if not key:
                    _set(cfg, path, copy.deepcopy(value))
                elif value is _MISSING:
                    entry.pop(key, None)
                else:
                    entry[key] = copy.deepcopy(value)
                taken.setdefault(part, []).append(path)
            elif _plain(current) == _plain(value):
                taken.setdefault(part, []).append(path)
            else:
                refusing.setdefault(part, []).append(path)
        record['value'] = copy.deepcopy(spec)
    return taken, refusing, changed


def apply_copied_specs(cfg: Config) -> List[str]:
    """Carries changed shared specs into the copies the config records.

    For each record ``copied_specs[path] = dict(spec=name, value=copied)``:
    every part (key, or the whole value for a string or list) of
    ``cfg[name]`` that differs from ``copied`` is written to ``cfg[path]``
    where that entry still holds the copied part; the record then holds the
    spec as applied, so that applying again (a dumped config, a resumed
    run) changes nothing. Specs that are themselves copies (``taxonomy``'s
    ``data_root``) are carried first, by repeating until nothing changes.

    Args:
        cfg (Config): Changed in place.

    Returns:
        list[str]: What was carried, e.g. "taxonomy.super_rank ->
        model.backbone.sub2super".

    Raises:
        ValueError: For a record of a spec the config lacks, and for a
            changed part of a spec that no copy takes (each copy set its
            own value): it would have no effect. The message names the
            spec, the part, its value and the copies.
    """
    records = cfg.get(RECORDS) or {}
    # Copies: a record may be the very object it recorded (a child config's
    # {{_base_.taxonomy}}), which carrying a change would change too.
    for record in records.values():
        record['value'] = copy.deepcopy(record['value'])
    carried: List[str] = []
    for _ in range(len(records) + 1):
        taken, refusing, changed = _carry(cfg, records, carried)
        for (name, key), paths in refusing.items():
            if (name, key) not in taken:
                shown = f'{name}.{key}' if key else name
                value = cfg[name].get(key) if key else cfg[name]
                raise ValueError(
                    f'{shown} = {value!r} has no effect: every entry that '
                    f'copies {name} sets its own value ({", ".join(paths)}); '
                    f'set those entries instead')
        if not changed:
            break
    return carried

