"""Stage 3 window rules: rsdtlib's mono windows exactly, triples as rsdt_beam intends them."""

import math

import numpy as np
import pytest

from rsdt_beam.common.modalities import BandCounts
from rsdt_beam.stack.rules import TileStack
from rsdt_beam.window.rules import WindowParams, densest_window, window_spans, windows


def rsdtlib_mono(ts, delta, stride, omega, Omega):
    """rsdtlib's mono windows as the semantics page states them: (start, stop) of each kept window."""
    kept = []
    for k in range(math.ceil(len(ts) / stride)):
        b = k * stride
        batch = ts[b : b + Omega]
        cur = [n for n, x in enumerate(batch) if ts[b] <= x < ts[b] + delta]
        if len(cur) >= omega:
            kept.append((b, b + len(cur)))
    return kept


def rsdtlib_triple_stride_1(ts, delta, omega, Omega):
    """rsdtlib's triples with stride 1: prev from the Omega records before b, cur/next from a 2*Omega batch."""
    kept = []
    for b in range(len(ts)):
        t0 = ts[b]
        batch = range(b, min(b + 2 * Omega, len(ts)))
        cur = [n for n in batch if t0 <= ts[n] < t0 + delta]
        nxt = [n for n in batch if t0 + delta <= ts[n] < t0 + 2 * delta]
        prev = [n for n in range(max(0, b - Omega), b) if t0 - delta <= ts[n] < t0]
        if min(len(prev), len(cur), len(nxt)) >= omega:
            kept.append(((prev[0], prev[-1] + 1), (cur[0], cur[-1] + 1), (nxt[0], nxt[-1] + 1)))
    return kept


def irregular_times(n, seed):
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.choice([1.0, 2.0, 2.0, 3.0, 7.0], size=n))


def test_mono_hand_example():
    ts = np.array([0, 1, 2, 3, 10, 11, 12, 30], float)
    spans = list(window_spans(ts, WindowParams(delta_size=5, window_stride=1, omega=2, Omega=3)))
    # b=0: [0,1,2] (Omega cut); b=1: [1,2,3]; b=2: [2,3]; b=3: [3] < omega; b=4: [10,11,12]; b=5: [11,12]
    assert [s.current for s in spans] == [(0, 3), (1, 4), (2, 4), (4, 7), (5, 7)]
    assert [s.window_id for s in spans] == [0, 1, 2, 3, 4]
    assert all(s.previous is None and s.next is None for s in spans)


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mono_equals_rsdtlib(stride, seed):
    ts = irregular_times(60, seed)
    for delta, omega, Omega in [(10, 3, 6), (15, 1, 16), (4, 2, 2), (30, 10, 16)]:
        spans = list(window_spans(ts, WindowParams(delta, stride, omega, Omega)))
        assert [s.current for s in spans] == rsdtlib_mono(list(ts), delta, stride, omega, Omega)


@pytest.mark.parametrize("seed", [0, 3])
def test_triple_equals_rsdtlib_when_delta_spans_at_most_omega_frames(seed):
    ts = irregular_times(80, seed)
    delta, omega, Omega = 8.0, 2, 8  # minimal gap 1 => at most 8 frames in any Delta
    spans = list(window_spans(ts, WindowParams(delta, 1, omega, Omega, triple=True)))
    assert [(s.previous, s.current, s.next) for s in spans] == rsdtlib_triple_stride_1(list(ts), delta, omega, Omega)


def test_triple_parts_hold_at_most_Omega_frames_and_prev_is_right_before_the_start():
    ts = np.arange(40, dtype=float)  # one frame per second; Delta = 10 s spans 10 frames
    params = WindowParams(delta_size=10, window_stride=3, omega=2, Omega=4, triple=True)
    spans = list(window_spans(ts, params))
    assert spans, "expected kept triples"
    for span in spans:
        b = span.current[0]
        assert span.current == (b, b + 4)
        assert span.previous == (max(0, b - 4), b)  # last <= Omega frames before b (rsdtlib drifts here)
        assert span.next == (b + 10, min(b + 14, 40))  # first <= Omega frames in [t0+Delta, t0+2Delta)
    assert spans[0].current[0] == 3  # b=0 has no previous frames
    assert spans[-1].next[1] <= 40


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(delta_size=10, window_stride=1, omega=5, Omega=4), "omega must be in"),
        (dict(delta_size=0, window_stride=1, omega=1, Omega=4), "Delta must be positive"),
        (dict(delta_size=10, window_stride=0, omega=1, Omega=4), "window_stride"),
    ],
)
def test_invalid_window_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WindowParams(**kwargs)


def test_windows_are_views_that_unpack_like_rsdtlib_elements():
    bands = BandCounts(sar=1, opt=2)
    frames = np.arange(6 * 2 * 2 * 4, dtype=np.float32).reshape(6, 2, 2, 4)
    stack = TileStack((1, 2), np.arange(6, dtype=float), frames, bands)
    mono = list(windows(stack, WindowParams(3, 1, 2, 3)))
    (cur,) = mono[0]
    ts, asc, dsc, opt = cur
    assert np.shares_memory(cur.frames, frames)
    np.testing.assert_array_equal(np.concatenate([asc, dsc, opt], -1), frames[0:3])
    assert (mono[0].tile, mono[0].window_id) == ((1, 2), 0)
    assert mono[0][0][1].shape == (3, 2, 2, 1)  # rsdtlib's window[0][1]: SAR ascending of cur
    triples = list(windows(stack, WindowParams(2, 1, 1, 2, triple=True)))
    assert triples and len(triples[0]) == 3 and triples[0].current is triples[0][1]


@pytest.mark.parametrize(
    "times, delta, stride, expected",
    [
        ([0, 1, 2, 10, 11], 3, 1, 3),  # [0, 3) holds 3 frames
        ([0, 10, 11, 12], 3, 1, 3),  # [10, 13)
        ([0, 10, 11, 12], 3, 2, 2),  # candidates start at frames 0 and 2 only: [11, 14) holds 2
        ([0, 5, 10], 5, 1, 1),  # [t0, t0 + Delta) excludes its end
        ([], 5, 1, 0),
    ],
)
def test_densest_window_counts_frames_in_delta_of_candidate_starts(times, delta, stride, expected):
    params = WindowParams(delta, stride, 1, 16)
    assert densest_window(np.asarray(times, np.float64), params) == expected
    kept = list(window_spans(np.asarray(times, np.float64), WindowParams(delta, stride, max(expected, 1), 16)))
    assert bool(kept) == (expected > 0)  # omega = the densest count keeps a window; one more keeps none
    assert not list(window_spans(np.asarray(times, np.float64), WindowParams(delta, stride, expected + 1, 16)))
