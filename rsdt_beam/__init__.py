"""rsdt_beam: rsdtlib's remote-sensing deep-temporal data preparation as Apache Beam pipelines.

Stage 1 (`rsdt_beam.acquire`) produces observations on one grid, Stage 2 (`rsdt_beam.stack`)
forward-fills them into per-tile stacks, Stage 3 (`rsdt_beam.window`) cuts deep-temporal windows.
The pure rules live in `stack.rules`, `window.rules` and `grid`; Beam transforms wire them.
"""

from rsdt_beam.grid import Grid, PixelWindow, TileLayout, work_items
from rsdt_beam.stack.files import StackFile
from rsdt_beam.stack.rules import BandCounts, StackParams, TileStack, fold_frames, stack_tile, written_times
from rsdt_beam.stack.transforms import FinishStacks, InspectObservations, StackChunks, WriteStacks, WrittenTimes
from rsdt_beam.window.rules import StreamedWindows, Window, WindowParams, WindowPart, window_spans, windows
from rsdt_beam.window.transforms import ReadTileStacks, WindowOutput, WriteWindows

__all__ = [
    "Grid", "PixelWindow", "TileLayout", "work_items",
    "StackFile", "BandCounts", "StackParams", "TileStack", "fold_frames", "stack_tile", "written_times",
    "FinishStacks", "InspectObservations", "StackChunks", "WriteStacks", "WrittenTimes",
    "StreamedWindows", "Window", "WindowParams", "WindowPart", "window_spans", "windows",
    "ReadTileStacks", "WindowOutput", "WriteWindows",
]
