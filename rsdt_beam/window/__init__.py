"""Stage 3: per-tile stacks -> deep-temporal windows (pure rules in `rules`, Beam transforms in `transforms`)."""
