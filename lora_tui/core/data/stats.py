"""Token-length statistics and histogram of a dataset (pure arithmetic, no I/O)."""

from __future__ import annotations

import math

from .records import TokenStats


def token_stats(lengths: list[int], max_seq_len: int, bins: int = 12) -> TokenStats | None:
    """Summary of per-row token lengths; None when there are no rows."""
    if not lengths:
        return None
    ordered = sorted(lengths)
    n = len(ordered)
    median = ordered[(n - 1) // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) // 2
    p95 = ordered[min(n - 1, math.ceil(0.95 * n) - 1)]  # nearest-rank percentile
    return TokenStats(
        count=n, min=ordered[0], median=median, p95=p95, max=ordered[-1],
        mean=round(sum(ordered) / n, 1), over_max=sum(1 for x in ordered if x > max_seq_len),
        max_seq_len=max_seq_len, histogram=histogram(ordered, max_seq_len, bins),
    )


def histogram(ordered: list[int], max_seq_len: int, bins: int = 12) -> list[tuple[int, int, int]]:
    """Equal-width bins (start, end exclusive, count) over the sorted lengths.

    When some rows exceed max_seq_len, a bin edge is placed exactly at the cut
    so the bars above it are the rows that will be truncated.
    """
    low, high = ordered[0], ordered[-1] + 1
    width = max(1, math.ceil((high - low) / bins))
    edges = list(range(low, high, width)) + [high]
    if low < max_seq_len + 1 < high and max_seq_len + 1 not in edges:
        edges = sorted(set(edges) | {max_seq_len + 1})
    counts = [0] * (len(edges) - 1)
    j = 0
    for x in ordered:  # sorted, so one pass
        while x >= edges[j + 1]:
            j += 1
        counts[j] += 1
    return [(a, b, c) for a, b, c in zip(edges, edges[1:], counts)]
