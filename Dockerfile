# The hle-stream daemon as an image. CPU torch by default; a CUDA build with
#   docker build --build-arg TORCH_INDEX=cu126 .
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

# cpu, or a CUDA tag of the PyTorch wheel index (cu126, cu128, ...)
ARG TORCH_INDEX=cpu
ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1

WORKDIR /app
# torch first, from the chosen index: the default PyPI wheel would pull several GB of CUDA libraries.
RUN pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_INDEX}"
COPY pyproject.toml README.md ./
COPY hle_stream ./hle_stream
COPY connectors ./connectors
# s3: a model store on S3; text: text events, with the sentence encoder inside its wheel (no download at run time)
RUN pip install ".[s3,text]"

RUN useradd --create-home --uid 10001 hle \
    && mkdir -p /var/lib/hle-stream \
    && chown hle:hle /var/lib/hle-stream
USER hle
VOLUME /var/lib/hle-stream
# Serving on 0.0.0.0 needs a bearer token: run with -e HLE_HTTP_TOKEN=<secret> (the daemon refuses
# to start without one); /healthz and /readyz stay open for probes.
ENV HLE_CHECKPOINT_DIR=/var/lib/hle-stream/checkpoints \
    HLE_HTTP_HOST=0.0.0.0 \
    HLE_HTTP_PORT=8080
EXPOSE 8080

HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
# exec form: SIGTERM reaches the daemon, which checkpoints, commits and exits 0.
ENTRYPOINT ["hle-stream", "run"]
