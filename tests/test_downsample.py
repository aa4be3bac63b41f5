"""Downsampling keeps charts light without hiding what matters (spikes, ends, order)."""
import math

import numpy as np
import pytest

from celltrain.views.downsample import downsample


def test_short_series_come_back_whole():
    xs, ys = downsample([0, 1, 2], [3.0, 1.0, 2.0], 10)
    assert xs.tolist() == [0, 1, 2] and ys.tolist() == [3.0, 1.0, 2.0]


def test_long_series_fit_and_keep_ends_order_and_spikes():
    n = 100_000
    xs = np.arange(n)
    ys = np.sin(xs / 500.0)
    ys[31_337] = 50.0          # one spike among 100k points
    ys[77_777] = -50.0
    dx, dy = downsample(xs, ys, 2000)
    assert len(dx) <= 2000
    assert dx[0] == 0 and dx[-1] == n - 1
    assert np.all(np.diff(dx) > 0), "points stay in their original order"
    assert 50.0 in dy and -50.0 in dy
    assert dy.max() == ys.max() and dy.min() == ys.min()
    # Every kept point is a real point of the series, not an average.
    assert np.array_equal(ys[dx.astype(int)], dy)


def test_nan_values_are_ignored_not_fatal():
    ys = [math.nan] * 50 + list(range(1000)) + [math.nan] * 50
    dx, dy = downsample(range(len(ys)), ys, 100)
    assert len(dx) <= 100
    finite = dy[~np.isnan(dy)]
    assert finite.min() == 0 and finite.max() == 999


@pytest.mark.parametrize("n", [5, 9, 1001, 4097])
@pytest.mark.parametrize("max_points", [4, 7, 100])
def test_never_more_than_asked(n, max_points):
    dx, dy = downsample(np.arange(n), np.random.default_rng(n).normal(size=n), max_points)
    assert len(dx) == len(dy) <= max_points


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="equal length"):
        downsample([1, 2, 3], [1, 2], 10)
    with pytest.raises(ValueError, match="at least 4"):
        downsample([1, 2, 3], [1, 2, 3], 2)
