# syntax=docker/dockerfile:1
# Orchestrator image: deploystream[orchestrator] only (LangGraph, PyGithub, httpx,
# checkpointers). No Ansible in here: that is the point of the design. Build from the
# repository root:
#   docker build -f deploy/orchestrator.Dockerfile .
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
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-editable --no-install-project --extra orchestrator
COPY streams.toml ./
COPY contracts ./contracts
COPY deploystream ./deploystream
COPY executor ./executor
COPY orchestrator ./orchestrator
RUN uv sync --locked --no-dev --no-editable --extra orchestrator

FROM ${PYTHON_IMAGE}
# Non-root. compose builds with the host uid that owns the mounted 0600 key files
# (DEPLOYSTREAM_UID).
ARG APP_UID=10001
RUN useradd --uid "${APP_UID}" --gid 0 --create-home --home-dir /home/deploystream deploystream \
    && mkdir -p /var/lib/deploystream \
    && chown -R "${APP_UID}:0" /home/deploystream /var/lib/deploystream \
    && chmod -R g=u /home/deploystream /var/lib/deploystream
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/deploystream \
    PYTHONUNBUFFERED=1 \
    DEPLOYSTREAM_CHECKPOINT_DB=/var/lib/deploystream/checkpoints.sqlite
USER ${APP_UID}:0
WORKDIR /home/deploystream
VOLUME ["/var/lib/deploystream"]
ENTRYPOINT ["deployctl"]
CMD ["orchestrator"]
