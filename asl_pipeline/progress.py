"""Progress of long work: a bar with rate and time left on a terminal, nothing in a log.

Callers print one summary line per task themselves, so a log of `dvc repro` (not a terminal) stays one
line per task while a person at a terminal sees the bar move.
"""
import sys

from tqdm import tqdm


def bar(total: int, description: str, unit: str = "image", iterable=None) -> tqdm:
    """A tqdm bar on stderr, disabled unless stderr is a terminal; iterate it, or call update(n)."""
    return tqdm(iterable, total=total, desc=description, unit=unit, file=sys.stderr, leave=False,
                dynamic_ncols=True, disable=not sys.stderr.isatty())
