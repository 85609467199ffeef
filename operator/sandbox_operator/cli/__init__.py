"""The `sandbox-operator` command."""
