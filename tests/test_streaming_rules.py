"""Stage 2's fold and Stage 3's windows, streamed through time: same frames and windows as the whole
series gives, with memory bounded by construction (the fold draws pieces lazily, windows hold a bounded
buffer)."""

import numpy as np
import pytest

from rsdt_beam.common.modalities import OPTICAL, SAR_ASCENDING, SAR_DESCENDING, BandCounts
from rsdt_beam.stack.rules import Piece, fold_frames, stack_tile
from rsdt_beam.window.rules import StreamedWindows, WindowParams, WindowSpan, WindowSpanStream, window_spans, windows

BANDS = BandCounts(sar=1, opt=2)
MODALITY_CYCLE = (SAR_ASCENDING, SAR_DESCENDING, OPTICAL)


def reference_spans(times, params):
    """The whole-series rule, written independently (searchsorted over every time)."""
    ts = np.asarray(times, np.float64)
    window_id = 0
    for begin in range(0, len(ts), params.window_stride):
        t0 = ts[begin]
        end_current = int(np.searchsorted(ts, t0 + params.delta_size))
        current = (begin, min(end_current, begin + params.Omega))
        if current[1] - current[0] < params.omega:
            continue
        if not params.triple:
            yield WindowSpan(window_id, current)
        else:
            previous = (max(int(np.searchsorted(ts, t0 - params.delta_size)), begin - params.Omega), begin)
            following = (
                end_current,
                min(int(np.searchsorted(ts, t0 + 2 * params.delta_size)), end_current + params.Omega),
            )
            if min(previous[1] - previous[0], following[1] - following[0]) < params.omega:
                continue
            yield WindowSpan(window_id, current, previous, following)
        window_id += 1


def random_pieces(rng, count, shape=(3, 4)):
    times = np.cumsum(rng.integers(0, 3, count)).astype(float)  # repeated times: one step, several types
    pieces = []
    for n, time in enumerate(times):
        modality = MODALITY_CYCLE[n % 3]
        data = rng.random((*shape, BANDS.bands_of(modality)), np.float32)
        mask = rng.random(shape) < 0.6
        pieces.append(Piece(float(time), modality, data, None if mask.all() else mask))
    return pieces


@pytest.mark.parametrize("seed", range(6))
def test_streamed_fold_equals_the_whole_series_fill(seed):
    rng = np.random.default_rng(seed)
    pieces = random_pieces(rng, 40)
    written = np.unique([p.time for p in pieces])[::3] + 0.5
    expected = np.zeros((len(written), 3, 4, BANDS.total), np.float32)
    state = np.zeros((3, 4, BANDS.total), np.float32)
    for k, time in enumerate(written):  # a plain loop over every piece up to each written time
        state[:] = 0
        for piece in pieces:
            if piece.time <= time:
                target = state[..., BANDS.slice_of(piece.modality)]
                np.copyto(target, piece.data, where=True if piece.mask is None else piece.mask[..., None])
        expected[k] = state
    np.testing.assert_array_equal(stack_tile((0, 0), pieces, written, (3, 4), BANDS).frames, expected)


def test_fold_draws_pieces_lazily_and_emits_each_frame_when_its_bin_closes():
    """Fails if the fold collects the series: frame k must come out before any piece after written[k]
    is drawn beyond the one that closes it, and pieces after the last written time are never drawn."""
    drawn = []

    def pieces():
        for time in range(100):
            drawn.append(float(time))
            yield Piece(float(time), SAR_ASCENDING, np.full((1, 1, 1), time, np.float32), None)

    written = np.array([2.0, 5.0, 6.0])
    seen = []
    for k, time, state, _ in fold_frames(pieces(), written, (1, 1), BANDS):
        seen.append((k, time, float(state[0, 0, 0]), len(drawn)))
    # frame 0 (t=2) is out when piece 3 is drawn; frame 2 (t=6) when piece 7 is; nothing after that
    assert seen == [(0, 2.0, 2.0, 4), (1, 5.0, 5.0, 7), (2, 6.0, 6.0, 8)]
    assert drawn[-1] == 7.0


def test_fold_refuses_pieces_out_of_time_order_and_places_pieces_at_their_window():
    backwards = [
        Piece(2.0, OPTICAL, np.ones((1, 1, 2), np.float32), None),
        Piece(1.0, OPTICAL, np.ones((1, 1, 2), np.float32), None),
    ]
    with pytest.raises(ValueError, match="out of time order"):
        list(fold_frames(backwards, np.array([5.0]), (1, 1), BANDS))
    placed = Piece(0.0, SAR_DESCENDING, np.full((1, 2, 1), 7, np.float32), None, at=(1, 2, 2, 4))
    ((state, observed),) = [
        (state.copy(), seen.copy())  # the fold reuses its arrays: copies are kept
        for _, _, state, seen in fold_frames([placed], np.array([0.0]), (2, 4), BANDS)
    ]
    assert state[..., 1].tolist() == [[0, 0, 0, 0], [0, 0, 7, 7]]
    assert observed[..., 1].tolist() == [[False] * 4, [False, False, True, True]] and not observed[..., 0].any()


PARAMS = [
    WindowParams(5.0, 1, 2, 4),
    WindowParams(5.0, 2, 1, 3),
    WindowParams(3.0, 1, 2, 8),
    WindowParams(5.0, 1, 2, 4, triple=True),
    WindowParams(4.0, 3, 1, 2, triple=True),
    WindowParams(9.0, 2, 3, 5, triple=True),
    WindowParams(0.5, 1, 1, 1),
]


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("seed", range(4))
def test_streamed_window_spans_equal_the_whole_series_rule(params, seed):
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.uniform(0.2, 3.0, 60))
    assert list(window_spans(times, params)) == list(reference_spans(times, params))
    assert list(window_spans(times[:1], params)) == list(reference_spans(times[:1], params))
    assert list(window_spans(np.array([]), params)) == []


def test_span_stream_keeps_only_the_times_still_needed():
    params = WindowParams(10.0, 1, 2, 4, triple=True)
    stream = WindowSpanStream(params)
    longest = 0
    for time in range(2000):  # one frame per second, Delta = 10 frames
        stream.push(float(time))
        longest = max(longest, len(stream._times))
    assert longest <= params.Omega + 2 * 10 + 2  # Omega back, 2 * Delta ahead: not the 2000 frames


@pytest.mark.parametrize("params", PARAMS)
def test_streamed_windows_equal_windows_of_the_whole_stack_with_a_bounded_buffer(params):
    rng = np.random.default_rng(3)
    times = np.cumsum(rng.uniform(0.2, 3.0, 300))
    frames = rng.random((len(times), 2, 3, BANDS.total), np.float32)
    stack = stack_tile(
        (1, 2),
        [Piece(t, m, f[..., BANDS.slice_of(m)], None) for t, f in zip(times, frames) for m in MODALITY_CYCLE],
        times,
        (2, 3),
        BANDS,
    )

    def parts(window):
        return [(p.timestamps.tolist(), p.frames.copy(), p.observed.copy()) for p in window.parts]

    expected = [(w.window_id, parts(w)) for w in windows(stack, params)]
    streamed = StreamedWindows((1, 2), params, BANDS)
    got, held = [], 0
    for time, frame, observed in stack.iter_frames():
        for window in streamed.add(time, frame, observed):
            got.append((window.window_id, parts(window)))
        held = max(held, streamed.held)
    got += [(w.window_id, parts(w)) for w in streamed.finish()]
    assert [g[0] for g in got] == [e[0] for e in expected] and len(got) == len(expected)
    for (_, got_parts), (_, expected_parts) in zip(got, expected):
        for (got_times, got_frames, got_seen), (expected_times, expected_frames, expected_seen) in zip(
            got_parts, expected_parts
        ):
            assert got_times == expected_times
            np.testing.assert_array_equal(got_frames, expected_frames)
            np.testing.assert_array_equal(got_seen, expected_seen)
    span = params.Omega + int(3 * params.delta_size / 0.2) + 2  # Omega back, (2) Delta ahead at 0.2 s steps
    assert held <= 2 * span < len(times)  # the buffer at most doubles past what is needed
