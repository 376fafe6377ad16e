"""Operating Carnet: request ids, JSON logs, Prometheus metrics, liveness and readiness."""
