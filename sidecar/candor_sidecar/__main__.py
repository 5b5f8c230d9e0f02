"""`python -m candor_sidecar`: the same as `candor sidecar`."""

from candor_sidecar.cli import main

if __name__ == "__main__":
    main(prog="python -m candor_sidecar")
