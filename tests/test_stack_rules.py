"""Stage 2 rules against docs/semantics.md's worked examples and edge cases."""

import numpy as np
import pytest

from rsdt_beam.common.modalities import OPTICAL, SAR_ASCENDING, SAR_DESCENDING, BandCounts
from rsdt_beam.common.times import parse_time
from rsdt_beam.stack.rules import Piece, StackParams, stack_tile, written_times

DAY = 86400.0


def t(text):
    return parse_time(text)


def test_written_time_stamps_of_the_small_case():
    """The semantics page's table: delta_step 2 days from 2017-01-01."""
    before = [t(f"2016-12-{d:02d}T10:00:00") for d in (12, 14, 15, 17, 19, 20, 22, 24, 27, 29)]
    in_range = {
        "2017-01-01T09:32:00": True,  # bin 0
        "2017-01-03T16:41:00": True,  # bin 1
        "2017-01-05T05:09:00": True,  # bin 2
        "2017-01-09T16:53:00": True,  # bin 4
        "2017-01-11T05:17:00": False,  # bin 5, not the last in it
        "2017-01-12T10:19:00": True,  # bin 5
        "2017-01-23T04:41:00": False,  # bin 11
        "2017-01-23T09:36:00": True,  # bin 11
    }
    after = [t("2017-07-02T05:00:00"), t("2017-07-03T10:00:00")]
    params = StackParams(t("2017-01-01"), t("2017-07-01"), 2 * DAY)
    written = written_times(before + [t(s) for s in in_range] + after, params)
    assert list(written) == [t(s) for s, keep in in_range.items() if keep]


def test_equal_time_stamps_count_once_and_bins_are_half_open():
    params = StackParams(0.0, 10 * DAY, 2 * DAY)
    times = [2 * DAY, 2 * DAY, 4 * DAY - 1, 4 * DAY, 10 * DAY]  # 10d == endtime: never written
    assert list(written_times(times, params)) == [4 * DAY - 1, 4 * DAY]
    assert written_times([], params).size == 0
    assert written_times([-1.0, 10 * DAY], params).size == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(starttime=0, endtime=10, delta_step=0), "delta_step must be positive"),
        (dict(starttime=10, endtime=10, delta_step=1), "endtime"),
    ],
)
def test_invalid_stack_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StackParams(**kwargs)


def piece(time, modality, values, mask=None):
    data = np.asarray(values, np.float32)
    return Piece(time, modality, data, None if mask is None else np.asarray(mask, bool))


def test_forward_fill_from_zeros_with_masks_and_assembly_order():
    bands = BandCounts(sar=1, opt=2)
    pieces = [
        # before starttime: fills the first written frame
        piece(-5.0, OPTICAL, [[[1, 2], [3, 4]]], mask=[[True, False]]),
        piece(1.0, SAR_ASCENDING, [[[10], [11]]]),
        piece(1.0, OPTICAL, [[[5, 6], [7, 8]]], mask=[[False, True]]),  # same time as asc: both apply
        piece(2.0, SAR_DESCENDING, [[[20], [21]]], mask=[[False, True]]),
        piece(3.0, OPTICAL, [[[9, 9], [9, 9]]], mask=[[False, False]]),  # fully masked: no change
        piece(4.0, SAR_ASCENDING, [[[12], [13]]]),  # after the last written time: ignored
    ]
    stack = stack_tile((0, 1), reversed(pieces), np.array([1.0, 3.0]), (1, 2), bands)
    assert stack.tile == (0, 1) and stack.frames.shape == (2, 1, 2, 4)
    # band layout [asc | dsc | opt]
    np.testing.assert_array_equal(stack.frames[0], [[[10, 0, 1, 2], [11, 0, 7, 8]]])
    np.testing.assert_array_equal(stack.frames[1], [[[10, 0, 1, 2], [11, 21, 7, 8]]])
    np.testing.assert_array_equal(stack.modality(SAR_DESCENDING)[1], [[[0], [21]]])
    assert stack.frames.dtype == np.float32 and stack.times.dtype == np.float64


def test_a_tile_without_pieces_is_all_zeros_and_no_written_times_gives_no_frames():
    bands = BandCounts(sar=2, opt=0)
    empty = stack_tile((1, 1), [], np.array([5.0, 6.0]), (3, 3), bands)
    assert empty.frames.shape == (2, 3, 3, 4) and not empty.frames.any()
    none = stack_tile((0, 0), [piece(1.0, SAR_ASCENDING, np.ones((3, 3, 2)))], np.array([]), (3, 3), bands)
    assert none.frames.shape == (0, 3, 3, 4)
