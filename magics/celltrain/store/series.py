"""Metric series for charts, read from the store: names, last values and downsampled series.

A series of up to ``READ_WHOLE_UP_TO`` points is read whole and downsampled exactly; a longer one
becomes min/max per bucket of ids, merged from the store's per-block rollups (``metric_blocks``)
when buckets are that wide, else aggregated inside SQLite.  ``MetricSeries`` keeps the one state
of these reads: a cache of downsampled series keyed by the newest metric id, so a poll of a
finished 1M-point run does not scan it again (the server holds one per workspace).

Every read is one rank's: rank 0's unless told.  The rollups are rank 0's only, so another rank's
long series is aggregated inside SQLite at every bucket width.
"""
from __future__ import annotations

import math
import threading
from typing import Any, Iterable

from .schema import METRIC_BLOCK_BITS

# Up to this many points a series is read whole and downsampled exactly (views.downsample);
# longer ones become min/max per bucket of ids, merged from the store's per-block rollups
# (``metric_blocks``: 256 ids each) when buckets are that wide, else aggregated inside SQLite.
READ_WHOLE_UP_TO = 20_000


def _number(value) -> float | int | None:
    """A metric value as JSON can carry it: None for NaN, infinities and anything that is not a
    number (a string or bytes written into the store by something other than celltrain)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value if math.isfinite(value) else None
    return None


def _finite(values: Iterable) -> list:
    """JSON has no NaN or infinity: a metric logged as None or NaN becomes null."""
    return [_number(v) for v in values]


class MetricSeries:
    """The chart reads of one store, with their cache of downsampled series."""

    def __init__(self, store):
        self.store = store
        self._series_cache: dict[tuple, tuple] = {}
        self._series_lock = threading.Lock()

    def metric_names(self, run_id: str, rank: int = 0) -> list[str]:
        """Distinct names by hopping through the (run_id, rank, name, id) index: one seek per
        name, where ``SELECT DISTINCT`` would read every point of a million-point run."""
        rows = self.store.conn.execute(
            "WITH RECURSIVE n(name) AS (SELECT MIN(name) FROM metrics WHERE run_id = ?1 AND "
            "rank = ?2 UNION ALL SELECT (SELECT MIN(name) FROM metrics WHERE run_id = ?1 AND "
            "rank = ?2 AND name > n.name) FROM n WHERE n.name IS NOT NULL) "
            "SELECT name FROM n WHERE name IS NOT NULL", (run_id, rank)).fetchall()
        return [r[0] for r in rows]

    def latest_metrics(self, run_id: str, names: list[str],
                       rank: int = 0) -> dict[str, float | None]:
        """The last value logged of each metric (one index seek each)."""
        conn = self.store.conn
        out = {}
        for name in names:
            row = conn.execute("SELECT value FROM metrics WHERE run_id=? AND rank=? AND name=? "
                               "ORDER BY id DESC LIMIT 1", (run_id, rank, name)).fetchone()
            out[name] = _number(row[0]) if row is not None else None
        return out

    def series(self, run_id: str, name: str, max_points: int, rank: int = 0) -> dict[str, Any]:
        """One metric downsampled.  The answer is cached per newest point id: an unchanged
        series costs two index seeks, and a growing long one only reads its new points."""
        conn = self.store.conn
        lo, hi = (conn.execute(f"SELECT {f}(id) FROM metrics WHERE run_id=? AND rank=? AND "
                               "name=?", (run_id, rank, name)).fetchone()[0]
                  for f in ("MIN", "MAX"))
        key = (run_id, rank, name, max_points)
        with self._series_lock:
            cached_hi, out, buckets = self._series_cache.get(key, (None, None, None))
            if out is not None and cached_hi == hi:
                return out
            if lo is None:
                out, buckets = {"name": name, "count": 0, "downsampled": False, "x": [],
                                "y": []}, None
            elif hi - lo < READ_WHOLE_UP_TO:
                out, buckets = self._series_whole(run_id, name, max_points, rank), None
            else:
                if buckets is None or buckets.lo != lo:
                    buckets = _Buckets(lo, hi, max_points // 2, rank)
                self._extend(buckets, run_id, name, hi)
                out = self._series_from(buckets, name, hi)
            out["last_id"] = hi or 0
            if len(self._series_cache) > 256:
                self._series_cache.clear()
            self._series_cache[key] = (hi, out, buckets)
            return out

    def _series_whole(self, run_id: str, name: str, max_points: int,
                      rank: int) -> dict[str, Any]:
        from ..views.downsample import downsample
        rows = self.store.conn.execute(
            "SELECT step, value FROM metrics WHERE run_id=? AND rank=? AND name=? ORDER BY id",
            (run_id, rank, name)).fetchall()
        xs = [_or_nan(r[0]) for r in rows]
        ys = [_or_nan(r[1]) for r in rows]
        x, y = downsample(xs, ys, max_points)
        return {"name": name, "count": len(rows), "downsampled": len(x) < len(rows),
                "x": _finite(x.tolist()), "y": _finite(y.tolist())}

    def _extend(self, b: "_Buckets", run_id: str, name: str, hi: int) -> None:
        """Read the points after ``b.hi`` into ``b``: the last bucket (maybe partial) again,
        then new ones; merge pairs of buckets while there are too many."""
        first = (b.hi + 1 - b.base) // b.width
        del b.stats[first:]
        if b.width >= 1 << METRIC_BLOCK_BITS and b.rank == 0:     # blocks: rank 0's only
            b.stats += self._block_stats(run_id, name, b, first, hi)
        else:
            starts = range(b.base + first * b.width, hi + 1, b.width)
            b.stats += self._bucket_stats(run_id, name, [(a, a + b.width) for a in starts],
                                          b.rank)
        b.hi = hi
        while len(b.stats) > b.limit:
            b.width *= 2
            b.stats = [_merge(b.stats[i:i + 2]) for i in range(0, len(b.stats), 2)]

    def _series_from(self, b: "_Buckets", name: str, hi: int) -> dict[str, Any]:
        """Two points per bucket: its min at the step of its first point, its max halfway to
        the next bucket (both within one bucket, far below a pixel on a chart)."""
        stats = [s for s in b.stats if s is not None]
        last_step = self.store.conn.execute("SELECT step FROM metrics WHERE id=?",
                                            (hi,)).fetchone()[0]
        x: list = []
        y: list = []
        for i, (step, vmin, vmax, _) in enumerate(stats):
            following = stats[i + 1][0] if i + 1 < len(stats) else last_step
            middle = (step + following) / 2 if _is_number(step) and _is_number(following) \
                else step
            x += [_number(step), _number(middle)]
            y += [vmin, vmax]
        return {"name": name, "count": sum(s[3] for s in stats), "downsampled": True,
                "x": x, "y": _finite(y)}

    def _block_stats(self, run_id: str, name: str, b: "_Buckets", first: int, hi: int) -> list:
        """(first step, min, max, count) of buckets ``first`` on (up to id ``hi``), each merged
        from the store's blocks of 256 ids (a bucket is a whole number of blocks): one row per
        block read, never one per point."""
        shift = (b.width >> METRIC_BLOCK_BITS).bit_length() - 1     # blocks per bucket: 2**shift
        start = (b.base >> METRIC_BLOCK_BITS) + (first << shift)
        out: list = [None] * ((hi - b.base) // b.width + 1 - first)
        for block, n, step, vmin, vmax in self.store.conn.execute(
                "SELECT block, n, first_step, min_value, max_value FROM metric_blocks "
                "WHERE run_id=? AND name=? AND block >= ? AND block <= ? ORDER BY block",
                (run_id, name, start, hi >> METRIC_BLOCK_BITS)):
            i = (block - start) >> shift
            stats = (step, _number(vmin), _number(vmax), n)
            out[i] = stats if out[i] is None else _merge([out[i], stats])
        return out

    def _bucket_stats(self, run_id: str, name: str, ranges: list[tuple[int, int]],
                      rank: int = 0) -> list:
        """(first step, min, max, count) of the points with ids in each range, or None for a
        range without any: two aggregates per point inside SQLite, no Python row objects."""
        conn = self.store.conn
        agg = ("SELECT MIN(value), MAX(value), COUNT(*) FROM metrics "
               "WHERE run_id=? AND rank=? AND name=? AND id >= ? AND id < ?")
        first = ("SELECT step FROM metrics WHERE run_id=? AND rank=? AND name=? AND id >= ? "
                 "ORDER BY id LIMIT 1")
        out = []
        for a, b in ranges:
            vmin, vmax, n = conn.execute(agg, (run_id, rank, name, a, b)).fetchone()
            if n and not (_is_number(vmin) and _is_number(vmax)):
                # Text or bytes sort above numbers in SQLite: take the numbers only (rare).
                vmin, vmax = conn.execute(agg.replace("COUNT(*)", "1") + " AND typeof(value) "
                                          "IN ('integer', 'real')", (run_id, rank, name, a, b)
                                          ).fetchone()[:2]
            out.append((conn.execute(first, (run_id, rank, name, a)).fetchone()[0], vmin, vmax,
                        n) if n else None)
        return out


class _Buckets:
    """Min/max of a long series in buckets of ``width`` consecutive ids from ``base`` (``lo``
    rounded down to a store block).  The width is a power of two, so two buckets merge into one
    when the series outgrows ``limit`` buckets, and a bucket at least a block wide is a whole
    number of the store's blocks."""

    def __init__(self, lo: int, hi: int, limit: int, rank: int = 0):
        self.lo, self.limit, self.width, self.rank = lo, limit, 1, rank
        self.base = lo >> METRIC_BLOCK_BITS << METRIC_BLOCK_BITS
        self.hi = self.base - 1
        while -(-(hi - self.base + 1) // self.width) > limit:
            self.width *= 2
        self.stats: list = []


def _merge(pair: list):
    stats = [s for s in pair if s is not None]
    if not stats:
        return None
    lows = [s[1] for s in stats if _is_number(s[1])]     # None: a bucket of NaNs only
    highs = [s[2] for s in stats if _is_number(s[2])]
    return (stats[0][0], min(lows) if lows else None, max(highs) if highs else None,
            sum(s[3] for s in stats))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _or_nan(value) -> float:
    """A value for numpy: numbers as they are, anything else (None, text, bytes) NaN."""
    return value if _is_number(value) else math.nan
