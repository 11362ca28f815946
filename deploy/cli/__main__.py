"""`python -m deploy.cli` is `flywheel` (used when the supervisor starts Flywheel processes)."""

from deploy.cli import main

main()
