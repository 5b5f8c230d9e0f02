"""import-linter plug-ins for the layering contract in pyproject.toml."""
