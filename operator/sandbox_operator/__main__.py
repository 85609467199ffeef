"""`python -m sandbox_operator` is the `sandbox-operator` command."""

from sandbox_operator.cli.main import main

main()
