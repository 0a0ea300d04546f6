# The concert.v1 gRPC server, for a PostgreSQL reached through CONCERT_DATABASE_URL.
#
#   docker build -t concert-reservation .
#   docker run -e CONCERT_DATABASE_URL=postgresql://... -p 50051:50051 concert-reservation
#   docker run -e CONCERT_DATABASE_URL=... concert-reservation migrate
#
# The image has no embedded PostgreSQL (that is the developer's setup): without
# CONCERT_DATABASE_URL the server refuses to start with a one-line error.

# --- builder: the locked runtime dependencies in a virtualenv, code byte-compiled
FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
COPY requirements/runtime.lock /tmp/runtime.lock
RUN /opt/venv/bin/pip install --no-deps -r /tmp/runtime.lock
WORKDIR /app
COPY server/ server/
COPY generated/ generated/
RUN /opt/venv/bin/python -m compileall -q server generated

# --- runtime: the virtualenv and the code, run by an unprivileged user
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app:/app/generated \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CONCERT_LISTEN=0.0.0.0:50051 \
    CONCERT_SEED_DEMO=false
RUN groupadd --system --gid 10001 concert \
 && useradd --system --uid 10001 --gid concert --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin concert
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
WORKDIR /app
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
# gRPC; the Prometheus endpoint listens on 9090 when CONCERT_METRICS_LISTEN=0.0.0.0:9090.
EXPOSE 50051 9090
# Health through grpc.health.v1's liveness service: the process works. Not
# readiness: an orchestrator that replaces unhealthy containers (Swarm) would
# restart every replica during a database outage, which a restart cannot fix.
# A draining server reports unhealthy too (every service NOT_SERVING).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-m", "server", "healthcheck", "--service", "liveness"]
# SIGTERM starts the graceful stop: NOT_SERVING, refuse new calls, drain, close the pool.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "server"]
CMD ["serve"]
