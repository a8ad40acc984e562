"""rsdt_beam: rsdtlib's remote-sensing deep-temporal data preparation as Apache Beam pipelines.

The public API, what a user composes (everything else is internal and may change):

    specs          AreaSpec ConvertSpec FetchSpec InputsSpec StackSpec WindowSpec OutputSpec InferenceSpec
                   ScheduleSpec
    vocabulary     Grid TileLayout PixelWindow BandCounts MODALITIES ObservationRef Rejection
    pure rules     StackParams TileStack fold_frames stack_tile written_times WindowParams Window WindowPart
                   window_spans windows StreamedWindows work_items
    Stage 1        ConvertPlan ConvertObservations FetchPlan FetchObservations discover_observations
                   EOPatchReader GeoTiffObservationReader
    Stage 2        StackPlan Stack FinishStacks WriteStacks StackFile read_tile_stack
    Stage 3        ReadTileStacks WindowOutput WriteWindows
    inference      KerasWindowModelHandler InferMaps PredictWindows ReadInferenceWindows WriteMaps MapOutput
    readers        training_dataset inference_dataset online_dataset OnlineWindows (tf.data);
                   read_windows training_pairs online_windows (numpy, no TensorFlow)
    pipelines      build_stack build_window build_fused build_convert build_fetch build_infer

Names are imported when first used, so `import rsdt_beam.grid` (or any pure module) loads neither
Beam nor TensorFlow, and the readers load TensorFlow only when asked for.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "rsdt_beam.specs": (
        "AreaSpec",
        "ConvertSpec",
        "FetchSpec",
        "InputsSpec",
        "StackSpec",
        "WindowSpec",
        "OutputSpec",
        "InferenceSpec",
        "ScheduleSpec",
    ),
    "rsdt_beam.grid": ("Grid", "TileLayout", "PixelWindow", "work_items"),
    "rsdt_beam.common.modalities": ("BandCounts", "MODALITIES"),
    "rsdt_beam.common.observations": ("ObservationRef", "Rejection"),
    "rsdt_beam.stack.rules": ("StackParams", "TileStack", "fold_frames", "stack_tile", "written_times"),
    "rsdt_beam.window.rules": ("WindowParams", "Window", "WindowPart", "window_spans", "windows", "StreamedWindows"),
    "rsdt_beam.acquire.convert": ("ConvertPlan", "ConvertObservations"),
    "rsdt_beam.acquire.fetch": ("FetchPlan", "FetchObservations"),
    "rsdt_beam.acquire.listing": ("discover_observations",),
    "rsdt_beam.acquire.eopatch": ("EOPatchReader",),
    "rsdt_beam.acquire.store": ("GeoTiffObservationReader",),
    "rsdt_beam.stack.plan": ("StackPlan",),
    "rsdt_beam.stack.transforms": ("Stack", "FinishStacks", "WriteStacks"),
    "rsdt_beam.stack.files": ("read_tile_stack", "StackFile"),
    "rsdt_beam.window.transforms": ("ReadTileStacks", "WindowOutput", "WriteWindows"),
    "rsdt_beam.inference": (
        "KerasWindowModelHandler",
        "InferMaps",
        "PredictWindows",
        "ReadInferenceWindows",
        "WriteMaps",
        "MapOutput",
    ),
    "rsdt_beam.datasets": ("training_dataset", "inference_dataset", "online_dataset", "OnlineWindows"),
    "rsdt_beam.numpy_reader": ("read_windows", "training_pairs", "online_windows"),
    "rsdt_beam.builders": ("build_stack", "build_window", "build_fused", "build_convert", "build_fetch", "build_infer"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'rsdt_beam' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
