"""Scheduled incremental launches (package): each run processes only what is new since the last successful one.

A fixed command line (`--end today --lookback 30d`) can run from cron, Cloud Scheduler or Airflow:

    <output_root>/runs/<start>-<end>/manifest.json   time range, inputs, counts, outputs, status, carry
    <output_root>/runs/<start>-<end>/windows/        the windows that became complete in this run
    <output_root>/runs/<start>-<end>/stack/          the run's new Stage 2 frames (--write_stacks)
    <output_root>/runs/<start>-<end>/state/          per tile: the frames later windows still need
    <output_root>/runs/<start>-<end>/rejected.json

Time is cut into runs `[start, end)` whose ends lie on the `delta_step` bins (`--bin_origin` +
k * `delta_step`), so every bin, and with it every written frame, belongs to exactly one run. The
first run starts at `end - lookback`; every later one where the last successful run ended.

Windows are rsdtlib's (`rsdt_beam.window.rules`): a window that starts at a frame may take frames up
to `Delta` (triples `2 * Delta`) later, so a run writes the windows that frames after its end can no
longer change, with the window ids of one launch over everything, and hands the rest on. What it
hands on (the carry) is the same for every tile, because all tiles share their frame times: the
global index of the first candidate window not yet written, the window count so far, and the times
of the frames those windows may still use. Per tile the state folder holds those frames plus the
forward-fill state at the run's end, so the next run reads only new observations. (Recomputing the
tail instead re-reads about as much, yet without the fill state its frames are wrong wherever a
pixel stayed invalid through the tail: see the README's measurement.)

A run is complete when, and only when, its manifest says `succeeded`: the launcher writes it
`running`, the job's last step `succeeded`, and the launcher `failed` (with the error) if the job
fails. A failed run's files are never used (windows/metadata.json is written last, so its window
folder never looks complete); the next run covers its time range again and then deletes it.
Re-running a run (same end, same inputs) rewrites the same files. A later launch lists the inputs from
the previous run's start on, never the history: observations of the previous run's range that appear
after it are counted in the next manifest (`late_observations`), not processed. Launches must not
overlap (cron: `flock`; Airflow: `max_active_runs=1`).
"""
