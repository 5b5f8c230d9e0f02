"""`python -m candor_sidecar`: the same as `candor sidecar`."""

from candor_sidecar.cli import sidecar_command

if __name__ == "__main__":
    sidecar_command(prog_name="python -m candor_sidecar")
