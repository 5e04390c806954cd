"""The one seed of each random item, shared by every stage that draws per-item randomness."""
from __future__ import annotations

import numpy as np


def item_seed(seed: int, stream: int, index: int) -> int:
    """A 32-bit seed of one (run, stream, item) triple: the same whatever the order, worker or process.

    ``stream`` keeps independent draws apart (an augmented view, an epoch, a loader's shuffle);
    numpy's SeedSequence mixes the three so that nearby triples give unrelated seeds.
    """
    return int(np.random.SeedSequence([int(seed), int(stream), int(index)]).generate_state(1)[0])
