"""The only code that talks to the Kubernetes API besides kopf: transport, client, lease, admission policy."""
