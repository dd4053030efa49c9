# jobsvc: one image for every role; the command picks it (migrate, api, worker).
#   docker build -t jobsvc .
#   docker run --rm -e JOBSVC_DATABASE_URL=postgresql://... -p 8000:8000 jobsvc          # the API
#   docker run --rm -e JOBSVC_DATABASE_URL=postgresql://... jobsvc worker                # a worker
# compose.yaml runs the whole stack (PostgreSQL, MinIO, migrate, api, workers).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# The schema is package data (jobsvc/schema.sql, a real file; the clone's top-level
# schema.sql is the symlink), so the wheel built by `pip install .` carries it.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY jobsvc/ jobsvc/
RUN pip install . \
    && rm -rf /src \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/jobsvc \
       --shell /usr/sbin/nologin jobsvc

# Not root. The working directory is the user's, so the default file storage
# (file://./.jobsvc/results) is writable; compose.yaml uses S3 (MinIO) instead.
USER jobsvc
WORKDIR /home/jobsvc

# Listen on every interface inside the container (the default 127.0.0.1 would be
# unreachable through a published port).
ENV JOBSVC_HOST=0.0.0.0 \
    JOBSVC_PORT=8000
EXPOSE 8000

# boto3 uploads run in many threads; glibc gives each its own malloc arena and
# keeps freed memory there. Two arenas keep a worker's peak memory near flat
# (bench: 16 S3 uploads of 20 MB, peak RSS about 160 -> 115 MiB).
ENV MALLOC_ARENA_MAX=2

# SIGTERM (docker stop) shuts the API and the worker down gracefully: give the
# container more than JOBSVC_SHUTDOWN_GRACE (30 s) before it is killed.
STOPSIGNAL SIGTERM

# The slim image has no curl. The API answers /healthz on JOBSVC_PORT; a worker has
# no HTTP port unless JOBSVC_METRICS_PORT is set, and then answers /metrics there
# (compose.yaml sets it). A worker without it reports unhealthy: set the port.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; m = os.environ.get('JOBSVC_METRICS_PORT'); u.urlopen(f'http://127.0.0.1:{m}/metrics' if m else f\"http://127.0.0.1:{os.environ.get('JOBSVC_PORT', '8000')}/healthz\", timeout=4)"]
ENTRYPOINT ["jobsvc"]
CMD ["api"]
