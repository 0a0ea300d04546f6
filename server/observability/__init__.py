"""Observability: Prometheus metrics, structured logs with a request id per call.

metrics.py      the per-App registry, its HTTP endpoint and the gauge API for features
logs.py         text or JSON log lines, the request id context variable
interceptor.py  the outermost interceptor: request id, call counts and latency, call log line
"""
