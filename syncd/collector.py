"""How a syncd process runs Python's cyclic garbage collector.

CPython's default first-generation threshold (700 container allocations) makes a sync pass
collect every few hundred parsed objects: a page of 1,000 catalog objects or counts is about
three collections, and each one walks every young object that is still alive (the page being
parsed, the batch waiting for its transaction). Almost none of that is cyclic garbage: parsed
pages are freed by reference counting. Raising the first threshold to 50,000 cut a first catalog
sync's main-thread CPU by about 10 % (``bench/catalog.py`` (1)) with the same peak RSS. The older
generations keep their ratios, so a real cycle is still collected, only in bigger steps.
"""

from __future__ import annotations

import gc

# (generation 0, generation 1, generation 2): see gc.set_threshold.
THRESHOLDS = (50_000, 20, 100)


def tune() -> None:
    """Apply syncd's collector thresholds to this process (``syncd`` console script; benches
    that time the daemon's components in-process call it too)."""
    gc.set_threshold(*THRESHOLDS)
