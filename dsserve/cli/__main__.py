"""`python -m dsserve.cli`: the `dsserve` command (tests, bench and e2e start `dsserve up` this way)."""

from dsserve.cli import run

run()
