"""Seeds derived from seeds: every random choice in nascli draws from a seed it can name.

A search's proposal i, candidate training, augmentation view v of image i: each gets
`derive_seed(seed, ...)` of the integers that identify it, never the global RNG, so results do not
depend on what ran before (a resumed search repeats exactly what an uninterrupted one would have done).
"""

from __future__ import annotations

import numpy as np


def derive_seed(*parts: int) -> int:
    """A well-mixed 64-bit seed from integers, e.g. derive_seed(seed, epoch, index)."""
    return int(np.random.SeedSequence([p % 2**64 for p in parts]).generate_state(1, dtype=np.uint64)[0])
