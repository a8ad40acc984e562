"""A step's several kinds of output as separate branches of the graph, not as tagged outputs.

A DoFn of this project that has more than one kind of output yields `(kind, value)` pairs; `split` turns
them into one PCollection per kind. Why not a multi-output ParDo (`with_outputs`, `TaggedOutput`): Beam's
DaskRunner (2.77) hands every consumer of such a step all of its outputs, whatever their tag (Beam's own
`Partition` included; tests/test_dask_runner.py keeps the reproduction), so rejections reached the
consumers of observations and the other way round. Separate branches mean the same on every runner, and
the runners that fuse steps (Dataflow, Flink, the portable runner) run the selections in the producer's
stage.
"""

from __future__ import annotations

import apache_beam as beam


def split(tagged: beam.PCollection, kinds: tuple[str, ...]) -> dict[str, beam.PCollection]:
    """PCollection[(kind, value)] -> {kind: PCollection[value]} for each of `kinds`."""
    return {kind: tagged | f"Select {kind}" >> beam.FlatMap(_select, kind) for kind in kinds}


def _select(item: tuple, kind: str):
    if item[0] == kind:
        yield item[1]
