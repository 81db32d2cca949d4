# syntax=docker/dockerfile:1
# Executor image: deploystream[executor] (ansible-core, ansible-runner, prometheus-client)
# installed exactly as uv.lock pins it. Build from the repository root:
#   docker build -f deploy/executor.Dockerfile .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Same uv as the Makefile, so the image resolves the lock the way CI does.
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"
ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
WORKDIR /src
# Dependencies first (a layer that survives source edits), then the project itself.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-editable --no-install-project --extra executor
COPY streams.toml ./
COPY contracts ./contracts
COPY deploystream ./deploystream
COPY executor ./executor
COPY orchestrator ./orchestrator
RUN uv sync --locked --no-dev --no-editable --extra executor

FROM ${PYTHON_IMAGE}
# git: the deploy playbook fetches repositories; ssh: Ansible reaches remote hosts.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openssh-client \
    && rm -rf /var/lib/apt/lists/*
# Non-root, with a passwd entry (ssh refuses a uid it cannot look up). compose builds
# with the host uid that owns the mounted 0600 key files (DEPLOYSTREAM_UID).
ARG APP_UID=10001
RUN useradd --uid "${APP_UID}" --gid 0 --create-home --home-dir /home/deploystream deploystream \
    && mkdir -p /var/lib/deploystream/work \
    && chown -R "${APP_UID}:0" /home/deploystream /var/lib/deploystream \
    && chmod -R g=u /home/deploystream /var/lib/deploystream
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/deploystream \
    PYTHONUNBUFFERED=1 \
    DEPLOYSTREAM_WORK_DIR=/var/lib/deploystream/work \
    DEPLOYSTREAM_METRICS_PORT=9100
USER ${APP_UID}:0
WORKDIR /home/deploystream
EXPOSE 9100
# No --name: the consumer name defaults to hostname-pid, unique per container, so
# `docker compose up --scale executor=N` needs no per-replica configuration.
ENTRYPOINT ["deployctl"]
CMD ["executor"]
