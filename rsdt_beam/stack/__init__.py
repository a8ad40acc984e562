"""Stage 2: observations -> per-tile forward-filled stacks (pure rules in `rules`, Beam transforms in
`transforms`)."""
