"""`python -m sandbox_operator` is the `sandbox-operator` command."""

from .cli import main

main()
