"""Health and metrics: liveness that means progress, Prometheus metrics."""
