"""`python -m candor_operator` is `candor operator`."""

from candor_operator.cli import operator_command

if __name__ == "__main__":
    operator_command(prog_name="python -m candor_operator")
