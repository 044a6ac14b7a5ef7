"""`python -m processor` is the `processor` command."""

from processor.cli import main

main()
