"""The rejected list of a run: every observation set aside, by a source or by Stage 2, with the reason."""

from __future__ import annotations

import json

import apache_beam as beam

from rsdt_beam import fs
from rsdt_beam.common.names import REJECTED_FILE
from rsdt_beam.common.observations import Rejection
from rsdt_beam.graph import Gather


class WriteRejections(beam.PTransform):
    """PCollections of Rejection (plus those listed on the launcher) -> `rejected.json` in `output_dir`.

    Applied to a tuple of PCollections; yields the number of rejections (one element).
    """

    def __init__(self, output_dir: str, listed: list[Rejection] = ()):
        super().__init__()
        self._output_dir = output_dir
        self._listed = [r.to_json() for r in listed]

    def expand(self, rejected_pcolls):
        pipeline = beam.pvalue.PBegin(rejected_pcolls[0].pipeline) if rejected_pcolls else None
        listed = pipeline | "Listed rejections" >> beam.Create(self._listed)
        as_json = [
            pc | f"Rejection as JSON {n}" >> beam.Map(lambda r: r.to_json()) for n, pc in enumerate(rejected_pcolls)
        ]
        output_dir = self._output_dir

        def write(gathered: dict) -> int:
            items = sorted(gathered["rejected"], key=lambda item: json.dumps(item, sort_keys=True))
            fs.write_json(fs.join(output_dir, REJECTED_FILE), items)
            return len(items)

        return (
            {"rejected": (listed, *as_json) | "All rejections" >> beam.Flatten()}
            | "Collect rejections" >> Gather()
            | "Write rejected.json" >> beam.Map(write)
        )
