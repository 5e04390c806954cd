"""The one seed of each random item, and the one seeded crop picker, shared by every stage that draws them."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def item_seed(seed: int, stream: int, index: int) -> int:
    """A 32-bit seed of one (run, stream, item) triple: the same whatever the order, worker or process.

    ``stream`` keeps independent draws apart (an augmented view, an epoch, a loader's shuffle);
    numpy's SeedSequence mixes the three so that nearby triples give unrelated seeds.
    """
    return int(np.random.SeedSequence([int(seed), int(stream), int(index)]).generate_state(1)[0])


def pick_rows(labels: Sequence[str], n: int | None = None, per_class: int | None = None, seed: int = 42) -> list[int]:
    """Seeded row indices: ``per_class`` from every class, or ``n`` drawn from the classes in turn.

    The one crop picker of every grid (ml-baselines.py, prediction.py, grad-cam.py), so that the
    same seed and size show the same crops whichever stage draws them.
    """
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(str(label), []).append(i)
    queues = {c: [int(r) for r in rng.permutation(rows)] for c, rows in sorted(by_class.items())}
    if per_class is not None:
        return sorted(r for rows in queues.values() for r in rows[:per_class])
    picked: list[int] = []
    limit = len(labels) if n is None else n
    while len(picked) < limit and any(queues.values()):
        for rows in queues.values():
            if rows and len(picked) < limit:
                picked.append(rows.pop(0))
    return sorted(picked)
