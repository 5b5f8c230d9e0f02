"""The `candor` command line: one click group, each subcommand imported lazily."""
