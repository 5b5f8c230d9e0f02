"""The trace journal, the file each app process shares with the sidecar.

- `format`: the binary layout both sides agree on;
- `writer`: the app side, used by the tracer (`candor_tracer.journaling`);
- `decode`, `reader`, `archive`, `files`, `skips`: the sidecar side. `reader.read_totals` totals every
  journal of a state directory and folds dead writers into the archive; `files` finds and opens what is
  there without trusting it, `skips` records what was left out and why. Apps never call them; importing
  the tracer does not import them.
"""
