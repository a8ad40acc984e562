"""Tiling math: rsdtlib's tile count and offsets, deadzones, read chunks, and parameter errors."""

import pytest

from rsdt_beam.grid import Grid, PixelWindow, TileLayout, work_items


def test_tiles_without_deadzone_drop_leftovers():
    layout = TileLayout(101, 100, 32, 32)
    assert (layout.num_tiles_y, layout.num_tiles_x) == (3, 3)
    assert layout.tile_window(2, 1) == PixelWindow(64, 96, 32, 64)
    assert list(layout.tiles())[:4] == [(0, 0), (0, 1), (0, 2), (1, 0)]


def test_tiles_with_deadzone_overlap_by_twice_the_deadzone():
    # rsdtlib: ny = (H - 2dz) // (t - 2dz); tile j starts at j * (t - 2dz)
    layout = TileLayout(101, 100, 32, 32, 2, 2)
    assert layout.stride_y == 28
    assert (layout.num_tiles_y, layout.num_tiles_x) == ((101 - 4) // 28, (100 - 4) // 28) == (3, 3)
    first, second = layout.tile_window(0, 0), layout.tile_window(0, 1)
    assert first.col_stop - second.col_start == 4  # 2 * deadzone overlap
    assert layout.tile_window(2, 2) == PixelWindow(56, 88, 56, 88)


def test_non_square_tiles_and_deadzones():
    layout = TileLayout(50, 70, 10, 20, 1, 3)
    assert (layout.stride_y, layout.stride_x) == (8, 14)
    assert (layout.num_tiles_y, layout.num_tiles_x) == ((50 - 2) // 8, (70 - 6) // 14) == (6, 4)
    assert layout.tile_window(5, 3) == PixelWindow(40, 50, 42, 62)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(tile_size_y=64, tile_size_x=64), "larger than the area"),
        (dict(tile_size_y=8, tile_size_x=8, deadzone_y=4), "deadzone_y=4 is too large"),
        (dict(tile_size_y=8, tile_size_x=8, deadzone_x=-1), "deadzone_x=-1"),
        (dict(tile_size_y=0, tile_size_x=8), "tile_size_y must be positive"),
    ],
)
def test_invalid_tiling_is_refused_with_the_culprit(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TileLayout(40, 40, **kwargs)


@pytest.mark.parametrize("chunk_size", [1, 32, 60, 100, 1000])
def test_chunks_cover_every_tile_once_and_windows_are_relative(chunk_size):
    layout = TileLayout(101, 100, 32, 32, 2, 2)
    seen = []
    for chunk in layout.chunks(chunk_size):
        origin = chunk.window
        for tile, window in chunk.tiles():
            absolute = layout.tile_window(*tile)
            assert window.row_start + origin.row_start == absolute.row_start
            assert window.col_stop + origin.col_start == absolute.col_stop
            assert 0 <= window.row_start and window.row_stop <= origin.height
            seen.append(tile)
            assert layout.chunk_of(*tile, chunk_size) == chunk
    assert sorted(seen) == list(layout.tiles())


def test_grid_json_round_trip_and_matching():
    grid = Grid.from_bounds("EPSG:32633", 465181.05, 5079244.89, 466180.53, 5080254.63, 101, 100)
    assert Grid.from_json(grid.to_json()) == grid
    assert grid.matches(Grid.from_json(grid.to_json()))
    shifted = Grid(
        grid.crs, (grid.transform[0], 0, grid.transform[2] + 5, 0, grid.transform[4], grid.transform[5]), 101, 100
    )
    assert not grid.matches(shifted)
    left, bottom, right, top = grid.bounds
    assert (round(left, 2), round(top, 2)) == (465181.05, 5080254.63)
    assert grid.window_transform(PixelWindow(10, 20, 5, 9))[2] == pytest.approx(left + 5 * grid.transform[0])


def test_a_liege_sized_run_has_thousands_of_work_items(capsys):
    """2,300 x 2,300 px at 10 m, 32 px tiles, the default 256 px read chunks (issue 14's target: >= 1,000)."""
    items = work_items(TileLayout(2300, 2300, 32, 32), 256)
    with capsys.disabled():
        print(f"\nLiege-sized run: {items.describe()}")
    assert (items.read_chunks, items.tiles) == (81, 71 * 71) and items.total >= 1000
    assert work_items(TileLayout(2300, 2300, 32, 32), 256, lambda j, i: j < 8 and i < 8).total == 1 + 64
