"""Results over several random seeds: mean and spread, counts, and error bands for plots.

An experiment whose outcome depends on chance (the initial weights, the order of the
batches) is run with several seeds, and the book reports what the runs have in common:
the mean with the standard deviation over seeds (:class:`Spread`, printed
``0.915 ± 0.007``) and how many seeds show an effect (:func:`count`). The experiment modules
also share here how they pick a learning rate from a sweep (:func:`best_rate`) and their
command line (:func:`regenerate`).

Runs whose loss diverged are ``nan`` in their records; :func:`spread` refuses them unless
told what they stand for (``diverged=0.1``, chance level for ten classes), so that a
diverged seed is never silently dropped from a mean.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from support import results

__all__ = ["Spread", "spread", "level", "ahead", "count", "by_seed", "best_rate", "regenerate"]


@dataclass(frozen=True)
class Spread:
    """The values of one measurement over seeds, with their mean and standard deviation.

    ``format(s, ".3f")`` (and so ``f"{s:.3f}"``) gives ``"0.915 ± 0.007"``; ``sd`` is the
    sample standard deviation (``ddof=1``), 0 for a single value.
    """

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def sd(self) -> float:
        return float(np.std(self.values, ddof=1)) if self.n > 1 else 0.0

    @property
    def low(self) -> float:
        return float(min(self.values))

    @property
    def high(self) -> float:
        return float(max(self.values))

    def __format__(self, spec: str) -> str:
        spec = spec or ".3f"
        return f"{self.mean:{spec}} ± {self.sd:{spec}}"

    def __str__(self) -> str:
        return format(self)


def spread(values: Iterable[float], *, diverged: float | None = None) -> Spread:
    """A :class:`Spread` of ``values``; ``nan`` (a diverged run) is replaced by ``diverged``.

    Args:
        values: one number per seed.
        diverged: what a ``nan`` stands for (e.g. ``0.1``, chance accuracy). Default: ``None``,
            which refuses ``nan``.

    Raises:
        ValueError: no values, or a ``nan`` and no ``diverged``.
    """
    values = [float(v) for v in values]
    if not values:
        raise ValueError("no values to summarize")
    if any(math.isnan(v) for v in values):
        if diverged is None:
            raise ValueError(f"{sum(map(math.isnan, values))} of {len(values)} values are nan (diverged "
                             f"runs): pass diverged= to say what they stand for")
        values = [diverged if math.isnan(v) else v for v in values]
    return Spread(tuple(values))


def level(a: Spread, b: Spread) -> bool:
    """Whether ``a`` and ``b`` are level: their means differ by no more than the larger of their spreads.

    The book's rule for comparing results over seeds: a gap no larger than the standard
    deviation between seeds is no difference, whichever mean is higher. Two results are
    level exactly when neither is :func:`ahead` of the other.
    """
    return abs(a.mean - b.mean) <= max(a.sd, b.sd)


def ahead(a: Spread, b: Spread) -> bool:
    """Whether ``a``'s mean is above ``b``'s by more than the larger of their spreads (see :func:`level`)."""
    return a.mean - b.mean > max(a.sd, b.sd)


def count(condition: Callable[..., bool], *series: Sequence[float]) -> tuple[int, int]:
    """``(k, n)``: for how many of the ``n`` seeds ``condition`` holds, seed by seed.

    ``count(lambda a, b: a > b, with_bn, without)`` compares two lists of per-seed results
    pairwise (the same seed for both), which is what "ahead in 9 of 10 seeds" means.
    """
    lengths = {len(s) for s in series}
    if len(lengths) != 1:
        raise ValueError(f"the series have different numbers of seeds: {sorted(lengths)}")
    hits = sum(bool(condition(*values)) for values in zip(*series, strict=True))
    return hits, lengths.pop()


# --------------------------------------------------------------------------------------------
# For the experiment modules: records over seeds, the choice of a learning rate, regenerating
# --------------------------------------------------------------------------------------------


def by_seed(records: Sequence[dict[str, Any]]) -> dict[str, list]:
    """``[{"accuracy": a0, ...}, {"accuracy": a1, ...}]`` (one per seed) → ``{"accuracy": [a0, a1], ...}``."""
    return {name: [record[name] for record in records] for name in records[0]}


def best_rate(sweep: dict[str, dict[str, list]], *, diverged: float) -> float:
    """The learning rate whose runs end with the highest mean accuracy over seeds.

    Args:
        sweep: ``{str(rate): {"accuracy": [[one value per epoch] per seed], ...}}``; the
            value of the last epoch counts, ``nan`` for a run that diverged.
        diverged: what a diverged run's accuracy counts as (chance level).

    Returns:
        The rate, as a float; of rates with equal means, the first in ``sweep``.
    """
    def mean_final(rate: str) -> float:
        return spread([run[-1] for run in sweep[rate]["accuracy"]], diverged=diverged).mean

    return float(max(sweep, key=mean_final))


def regenerate(module_doc: str, run: Callable[..., Any], path: Path, sources: Sequence[str], command: str,
               argv: Sequence[str] | None = None) -> None:
    """The command line of an experiment module: run it and commit its results to ``path``.

    ``--jobs N`` runs it in ``N`` processes; the results do not depend on it.
    """
    parser = argparse.ArgumentParser(description=module_doc.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1, help="processes to run in (the results do not change)")
    args = parser.parse_args(argv)
    data = run(jobs=args.jobs)
    path.parent.mkdir(exist_ok=True)
    results.save(path, data, sources, command=command)
    print(f"wrote {path}")
