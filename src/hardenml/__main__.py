"""`python -m hardenml`: the same as the `hardenml` command."""

from hardenml.cli import main

main()
