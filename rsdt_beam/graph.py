"""Graph shapes that every runner executes alike, Beam's DaskRunner (2.77) included.

Two defects of that runner shape this project's graphs (tests/test_dask_runner.py reproduces both):

- A multi-output ParDo (`with_outputs`, `TaggedOutput`, and so Beam's own `Partition`) hands each consumer all
  of its outputs, whatever their tag: rejections reached the consumers of observations and the other way
  round. So a DoFn of this project with several kinds of output yields `(kind, value)` pairs, and `split`
  makes one branch per kind. The runners that fuse steps (Dataflow, Flink, the portable runner) run the
  selections in the producer's stage.
- The runner computes only the last transform applied and what it depends on: a pipeline's other outputs
  (stacks beside windows, rejected.json) were silently not written. `join_ends` makes everything a pipeline
  writes an input of one last step.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.pipeline import PipelineVisitor

END = "All outputs"


def split(tagged: beam.PCollection, kinds: tuple[str, ...]) -> dict[str, beam.PCollection]:
    """PCollection[(kind, value)] -> {kind: PCollection[value]} for each of `kinds`."""
    return {kind: tagged | f"Select {kind}" >> beam.FlatMap(_select, kind) for kind in kinds}


def _select(item: tuple, kind: str):
    if item[0] == kind:
        yield item[1]


class _Ends(PipelineVisitor):
    """PCollections that no transform reads (as main or side input), in the order they were made."""

    def __init__(self):
        self.made: list[beam.PCollection] = []
        self.read: set[int] = set()

    def visit_transform(self, node):
        self.made += [out for out in node.outputs.values() if isinstance(out, beam.PCollection)]
        self.read.update(id(value) for value in node.inputs)
        self.read.update(id(side.pvalue) for side in node.side_inputs)

    def ends(self) -> list[beam.PCollection]:
        return [pcoll for pcoll in self.made if id(pcoll) not in self.read]


def join_ends(pipeline: beam.Pipeline) -> beam.PCollection | None:
    """Adds one last step whose inputs are all the pipeline's ends (what no step reads); returns its output
    (None for a pipeline without any).

    Call it once, after the graph is built. Elsewhere than on the DaskRunner the step only passes its
    inputs' few elements (file names, counts) on to nothing.
    """
    visitor = _Ends()
    pipeline.visit(visitor)
    ends = visitor.ends()
    return tuple(ends) | END >> beam.Flatten() if ends else None
