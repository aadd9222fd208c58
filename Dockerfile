# One image for every medm2t service (worker, dashboard, replay); docker-compose.yml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, from the CPU index: a plain `pip install torch` pulls a multi-GB CUDA build. For a GPU build
# pass e.g. --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 (see docs/deployment.md).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY medm2t ./medm2t
COPY replay ./replay
COPY stream ./stream
COPY model ./model
COPY dashboard ./dashboard
# torch is already satisfied above, so this installs the rest of the pinned dependencies only.
RUN pip install . && python -c "import torch, medm2t.cli; print('torch', torch.__version__)"

RUN useradd --create-home --uid 10001 medm2t && mkdir -p /data && chown medm2t /data
USER medm2t
WORKDIR /home/medm2t

ENTRYPOINT ["medm2t"]
CMD ["--help"]
