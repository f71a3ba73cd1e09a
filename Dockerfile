# syntax=docker/dockerfile:1
# mastery-stream: one image for the worker, the API and the tools, named
# mastery-stream:<version of pyproject.toml> everywhere (deploy/README.md, "The image").
#   docker build -t mastery-stream:0.1.0 .
#   docker run --rm mastery-stream:0.1.0 --version
# Entry point `mastery`; the command is the subcommand (worker, api, rebuild, ...).

# --- build: a virtualenv with the project and its runtime dependencies -------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY processors ./processors
COPY infra ./infra
COPY api ./api
COPY app ./app
RUN python -m venv /opt/mastery \
 && /opt/mastery/bin/pip install --upgrade pip \
 && /opt/mastery/bin/pip install . \
 && /opt/mastery/bin/mastery --version

# --- runtime: the virtualenv only, run as an unprivileged user ---------------
FROM python:3.11-slim AS runtime
RUN groupadd --system --gid 10001 mastery \
 && useradd --system --uid 10001 --gid mastery --home-dir /var/lib/mastery \
        --create-home --shell /usr/sbin/nologin mastery
COPY --from=build /opt/mastery /opt/mastery
ENV PATH=/opt/mastery/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MASTERY_DATA_DIR=/var/lib/mastery/worker \
    MASTERY_API_HOST=0.0.0.0 \
    MASTERY_LOG_FORMAT=json
USER 10001:10001
WORKDIR /var/lib/mastery
VOLUME ["/var/lib/mastery"]
# 8080: the API; 9180: a worker's /metrics, /healthz, /readyz (MASTERY_METRICS_PORT)
EXPOSE 8080 9180
ENTRYPOINT ["mastery"]
CMD ["--help"]
