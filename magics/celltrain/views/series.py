"""A metric's points as the views hold them: growable arrays of step, value and time."""
from __future__ import annotations

import numpy as np


class Series:
    """One metric's points in growable arrays (appends amortized, no list-to-array copies)."""

    def __init__(self):
        self.n = 0
        self._data = np.empty((3, 256))   # rows: step, value, time

    def extend(self, rows: list[tuple[int, float | None, float]]) -> None:
        need = self.n + len(rows)
        if need > self._data.shape[1]:
            grown = np.empty((3, max(need, 2 * self._data.shape[1])))
            grown[:, :self.n] = self._data[:, :self.n]
            self._data = grown
        block = np.array([(s, np.nan if v is None else v, t) for s, v, t in rows],
                         dtype=float).T
        self._data[:, self.n:need] = block
        self.n = need

    @property
    def steps(self) -> np.ndarray:
        return self._data[0, :self.n]

    @property
    def values(self) -> np.ndarray:
        return self._data[1, :self.n]

    @property
    def times(self) -> np.ndarray:
        return self._data[2, :self.n]
