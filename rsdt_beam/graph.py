"""Graph shapes that every runner executes alike, Beam's DaskRunner (2.77) included.

Four defects of that runner shape this project's graphs (tests/test_dask.py reproduces each):

- A multi-output ParDo (`with_outputs`, `TaggedOutput`, and so Beam's own `Partition`) hands each consumer all
  of its outputs, whatever their tag: rejections reached the consumers of observations and the other way
  round. So a DoFn of this project with several kinds of output yields `(kind, value)` pairs, and `split`
  makes one branch per kind. The runners that fuse steps (Dataflow, Flink, the portable runner) run the
  selections in the producer's stage.
- The runner computes only the last transform applied and what it depends on: a pipeline's other outputs
  (stacks beside windows, rejected.json) were silently not written. `join_ends` makes everything a pipeline
  writes an input of one last step.
- A side input is evaluated by computing its whole upstream again inside every task that reads it, and so is
  the default a `CombineGlobally` injects (through a side input) for an empty input. So no step of this
  project reads a side input: summaries (time stamps, counts, file names, statistics, "written" signals) reach
  the step that needs them as main inputs, `gather`ed into one element or joined per key with the data.
- `Reshuffle` is an identity, and a `Create` of fewer than 128 elements is one partition, so the steps after
  it run as one task on one worker. `Spread` redistributes by a key through a real `GroupByKey`; the number of
  partitions comes from the runner's `--dask_npartitions` (rsdt_beam.cli sets a default, see the README).
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


class _GatherFn(beam.CombineFn):
    """(name, value) pairs -> {name: [values]} (every name of `names` present, values in arrival order)."""

    def __init__(self, names: tuple[str, ...]):
        super().__init__()
        self._names = names

    def create_accumulator(self) -> dict:
        return {name: [] for name in self._names}

    def add_input(self, accumulator: dict, named: tuple) -> dict:
        name, value = named
        if name is not None:  # the anchor
            accumulator[name].append(value)
        return accumulator

    def merge_accumulators(self, accumulators) -> dict:
        merged = self.create_accumulator()
        for accumulator in accumulators:
            for name, values in accumulator.items():
                merged[name].extend(values)
        return merged

    def extract_output(self, accumulator: dict) -> dict:
        return accumulator


class Gather(beam.PTransform):
    """{name: PCollection} -> a one-element PCollection[dict[name, list]]: every element of every input, by
    name, in one element that exists once every input is complete (also when all are empty).

    For summaries (time stamps, file names, counts): what a final step needs of the steps before it, as its
    main input, so every runner computes those steps once (no side input, no injected default: an anchor
    element makes the one output). The order of a list's values is the runner's: sort where it matters.
    """

    def expand(self, pcolls: dict):
        names = tuple(pcolls)
        anchor = beam.pvalue.PBegin(self.pipeline) | "Anchor" >> beam.Create([(None, None)])
        named = [
            pcoll | f"Name {name}" >> beam.Map(lambda value, name=name: (name, value)) for name, pcoll in pcolls.items()
        ]
        return (
            (anchor, *named)
            | "Together" >> beam.Flatten()
            | "Gather" >> beam.CombineGlobally(_GatherFn(names)).without_defaults()
        )


class Spread(beam.PTransform):
    """PCollection[T] -> the same elements, redistributed over the workers by `key(element)` (an int or a
    tuple of ints: a key every process hashes alike).

    What `Reshuffle` does on runners that implement it (a fusion break: the steps after it run as separate
    work items), done with a `GroupByKey` that every runner implements (not Beam's DaskRunner's identity
    `Reshuffle`). Elements with equal keys travel together; give each work item its own key.
    """

    def __init__(self, key):
        super().__init__()
        self._key = key

    def expand(self, pcoll):
        key = self._key
        return (
            pcoll
            | "Key" >> beam.Map(lambda element: (key(element), element))
            | "Group by key" >> beam.GroupByKey()
            | "Ungroup" >> beam.FlatMap(lambda keyed: keyed[1])
        )


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
