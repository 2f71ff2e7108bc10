# xret image. CPU by default; `--build-arg VARIANT=cuda` gives the CUDA image with onnxruntime-gpu.
# Stage 1 builds the default model repository with the export tools (torch); the runtime stage gets
# only the service extra and the finished repository, so torch never ships in the serving image.
ARG VARIANT=cpu

FROM python:3.11-slim AS build
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY export ./export
COPY proto ./proto
COPY benchmarks ./benchmarks
RUN python3 -m venv .venv && .venv/bin/pip install -q -e '.[serve,export]'
RUN .venv/bin/python -m export base --out /models/repo --cache-dir /tmp/xret-cache

FROM python:3.11-slim AS runtime-cpu
ENV XRET_SERVE_EXTRA=serve

# onnxruntime-gpu up to 1.26 is built for CUDA 12 (libcublas.so.12), from 1.27 for CUDA 13: the pin below must
# match this image's CUDA major, or the CUDA provider fails to load (checked on the wheels' linked libraries).
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04 AS runtime-cuda
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && ln -sf /usr/bin/python3.11 /usr/local/bin/python3 && rm -rf /var/lib/apt/lists/*
ENV XRET_SERVE_EXTRA=serve,gpu

FROM runtime-${VARIANT} AS runtime
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY export ./export
COPY proto ./proto
COPY benchmarks ./benchmarks
RUN python3 -m venv .venv && .venv/bin/pip install -q -e ".[${XRET_SERVE_EXTRA}]" \
 && if [ "${XRET_SERVE_EXTRA}" = "serve,gpu" ]; then .venv/bin/pip uninstall -y -q onnxruntime \
    && .venv/bin/pip install -q --force-reinstall --no-deps 'onnxruntime-gpu>=1.20,<1.27'; fi \
 && .venv/bin/python -m service.grpc.codegen
COPY --from=build /models/repo /models/repo
ENV XRET_REPO=/models/repo XRET_INDEX=/data/index XRET_HOST=0.0.0.0
VOLUME /data
EXPOSE 8000 50051
CMD [".venv/bin/python", "-m", "service", "serve", "--repo", "/models/repo", "--index", "/data/index", "--host", "0.0.0.0"]
