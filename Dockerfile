# One file, two images: `api` (no torch: it starts fast and stays small) and `worker`.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 1000 gradtrace
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api ./api
COPY shared ./shared
COPY worker ./worker
COPY examples ./examples

FROM base AS api
RUN pip install .
USER gradtrace
EXPOSE 8000
CMD ["gradtrace", "api", "--host", "0.0.0.0", "--port", "8000"]

FROM base AS worker
# TORCH picks the build: a CPU wheel for CPU nodes, the default (CUDA) wheel for GPU nodes.
ARG TORCH=torch
ARG PIP_EXTRA_INDEX_URL=
# gcc builds the tracer's C kernels (worker/_kernels.c), then leaves.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install "${TORCH}" && pip install ".[worker]" \
    && (cd / && python -c "import worker._kernels") \
    && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
USER gradtrace
CMD ["gradtrace", "worker", "--queues", "cpu"]
