"""`python -m syncd` runs the command line."""

from syncd.cli import console

raise SystemExit(console())
