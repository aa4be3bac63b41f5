"""Downsampling a series for display: few points on screen, every spike still visible.

Charts never need more points than they have pixels; sending 100k points to a browser or to
matplotlib only makes the notebook slow.  The exact values stay in the store; this only decides
what is drawn.  The method is min/max per bucket: the series is cut into equal runs of
consecutive points and each run keeps its lowest and its highest point, in their original order,
so a single loss spike survives however many points surround it.  First and last points are
always kept.  NaN values (a metric logged as None) are ignored when picking min and max.
"""
from __future__ import annotations

import numpy as np

DEFAULT_MAX_POINTS = 2000


def downsample(xs, ys, max_points: int = DEFAULT_MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` of the points (xs[i], ys[i]), chosen by min/max per bucket.

    Returns two float arrays (``.tolist()`` them for JSON).  Series that already fit are returned
    whole.  Raises ValueError for series of different lengths or a ``max_points`` below 4.
    """
    x = np.asarray(xs, dtype=float)
    y = np.asarray(ys, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"downsample needs two 1-d series of equal length, got shapes "
                         f"{x.shape} and {y.shape}")
    if max_points < 4:
        raise ValueError(f"max_points must be at least 4 (first, last, one min/max pair), "
                         f"not {max_points!r}")
    n = len(x)
    if n <= max_points:
        return x, y
    # Inner points go into buckets of equal size; each bucket gives two points.
    buckets = (max_points - 2) // 2
    inner = y[1:-1]
    size = -(-len(inner) // buckets)                      # ceil: every point in some bucket
    padded = np.full(size * buckets, np.nan)
    padded[:len(inner)] = inner
    grid = padded.reshape(buckets, size)
    valid = ~np.isnan(grid)
    has_value = valid.any(axis=1)
    lo = np.where(valid, grid, np.inf).argmin(axis=1)
    hi = np.where(valid, grid, -np.inf).argmax(axis=1)
    base = np.arange(buckets) * size
    first, second = np.minimum(lo, hi), np.maximum(lo, hi)
    picks = np.stack([base + first, base + second], axis=1)[has_value].ravel() + 1
    picks = picks[picks < n - 1]
    index = np.concatenate(([0], np.unique(picks), [n - 1]))
    return x[index], y[index]
