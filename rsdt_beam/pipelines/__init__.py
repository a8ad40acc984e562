"""The runnable entry points, one per command: `python -m rsdt_beam.pipelines.<command> --help`."""
