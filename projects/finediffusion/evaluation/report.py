"""Markdown tables of judged samples (:func:`judge.judged`'s verdicts), as
tools/demo.py prints them."""
from typing import Dict, List, Sequence

from ..taxonomy import Taxonomy

GUIDANCE_HEADER = [
    'guidance', 'scale', 'trainable', 'train img/s', 'subclass top-1',
    'superclass top-1', 'within-superclass top-1', 'diversity (real = 1)'
]
SWEEP_HEADER = [
    'scale', 'fine-grained sub', 'fine-grained super', 'fine-grained div',
    'standard sub', 'standard super', 'standard div'
]
METHODS_HEADER = [
    'method', 'trainable', 'train img/s', 'train s', 'subclass top-1',
    'superclass top-1', 'diversity'
]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A Markdown table, each cell as ``str`` writes it.

    Args:
        header (Sequence[str]): Column titles.
        rows (Sequence[Sequence]): Rows of ``len(header)`` cells.

    Returns:
        str: The table's lines, without a final newline.
    """
    lines = [f'| {" | ".join(header)} |',
             '|' + '|'.join(' --- ' for _ in header) + '|']
    lines += [f'| {" | ".join(str(c) for c in row)} |' for row in rows]
    return '\n'.join(lines)


def print_table(title: str, table: str) -> str:
    """Prints a table under its title, between blank lines.

    Args:
        title (str): One line.
        table (str): E.g. :func:`markdown_table`'s.

    Returns:
        str: ``table``.
    """
    print(f'\n{title}\n{table}\n', flush=True)
    return table


def _scores(verdict: Dict, within: bool = False) -> List[str]:
    """A verdict's top-1 figures (percent) and diversity."""
    cells = [f'{verdict["subclass_top1"]:.1%}',
             f'{verdict["superclass_top1"]:.1%}']
    if within:
        cells.append(f'{verdict["within_superclass"]:.1%}')
    return cells + [f'{verdict["diversity"]:.2f}']


def guidance_title(taxonomy: Taxonomy, judge_top1: float) -> str:
    """The title of :func:`guidance_table`: the taxonomy, chance and the
    judge's subclass top-1 (a fraction) on held-out real images."""
    chance = 1 / len(taxonomy.names)
    return (f'FineDiffusion on the synthetic fine-grained taxonomy '
            f'({len(taxonomy.names)} subclasses, {len(taxonomy.super_names)} '
            f'superclasses; chance {chance:.1%}); judge on held-out real '
            f'images: {judge_top1:.1%} subclass top-1')


def guidance_table(results: Sequence[Dict], trainable_percent: float,
                   train_img_per_s: float) -> str:
    """One row per guidance mode of one model.

    Args:
        results (Sequence[dict]): Verdicts with ``mode`` and ``scale``.
        trainable_percent (float): The model's trainable share of the
            backbone's parameters, in percent.
        train_img_per_s (float): Its training speed, images per second.

    Returns:
        str: The table (:data:`GUIDANCE_HEADER`).
    """
    return markdown_table(GUIDANCE_HEADER, [
        [r['mode'], r['scale'], f'{trainable_percent:.2f}%',
         f'{train_img_per_s:.0f}', *_scores(r, within=True)]
        for r in results])


def sweep_table(sweep: Sequence[Dict]) -> str:
    """Fine-grained against standard CFG, one row per scale.

    Args:
        sweep (Sequence[dict]): Verdicts with ``scale``, alternately of
            fine-grained and standard CFG at the same scale.

    Returns:
        str: The table (:data:`SWEEP_HEADER`).
    """
    return markdown_table(SWEEP_HEADER, [
        [a['scale'], *_scores(a), *_scores(b)]
        for a, b in zip(sweep[::2], sweep[1::2])])


def methods_table(methods: Sequence[Dict]) -> str:
    """One row per fine-tuning method.

    Args:
        methods (Sequence[dict]): Verdicts with ``method``,
            ``trainable_percent``, ``img_per_s`` and ``seconds`` (of its
            training).

    Returns:
        str: The table (:data:`METHODS_HEADER`).
    """
    return markdown_table(METHODS_HEADER, [
        [m['method'], f'{m["trainable_percent"]:.2f}%',
         f'{m["img_per_s"]:.0f}', m['seconds'], *_scores(m)]
        for m in methods])


def gain_line(title: str, baseline: str, gain: Dict) -> str:
    """A paired gain (:func:`statistics.paired_difference`) in points.

    Args:
        title (str): What gained, e.g. 'fine-grained CFG'.
        baseline (str): What it is compared with, e.g. 'no guidance'.
        gain (dict): ``difference`` and ``interval95``, fractions.

    Returns:
        str: One line.
    """
    low, high = gain['interval95']
    return (f'{title} minus {baseline}, subclass top-1: '
            f'{100 * gain["difference"]:+.1f} points (95% interval over '
            f'classes {100 * low:+.1f} to {100 * high:+.1f})')
