"""`python -m sandbox_testbench` is the `sandbox-testbench` command."""

from .cli import main

main()
