"""The command-line layer: flags declared once (`flags`), parsed once into specs (`specs`), the commands
(`commands`) and the one way they run (`run`). The only place that sees Beam's PipelineOptions."""
