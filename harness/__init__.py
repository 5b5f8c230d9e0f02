"""What Candor's tests and benchmarks run that is not Candor: a real control plane and node (cluster), the
processes the tests start (processes), the apps those processes serve (apps), and the import-linter plug-in
(lint). Imported from the repository root (pytest's pythonpath, `python -m bench.<name>`)."""
