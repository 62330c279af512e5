"""`python -m dsserve`: the `dsserve` command."""

from dsserve.cli import run

run()
