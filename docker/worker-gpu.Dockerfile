# A GPU worker on a CUDA base with a CUDA build of the pinned torch. One worker process per GPU
# (concurrency 1); a job asking for N GPUs is started with `accelerate launch`.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /app
COPY requirements/worker.txt requirements/worker.txt
RUN pip install -r requirements/worker.txt --index-url https://download.pytorch.org/whl/cu128

COPY pyproject.toml README.md ./
COPY treegrpo treegrpo
COPY backend backend
COPY workers workers
COPY frontend frontend
COPY rewardserve rewardserve
# Migrations sit beside the packages; an editable install keeps `backend` importing from /app,
# where `treegrpo migrate` finds alembic.ini and migrations/ (backend/migrate.py).
COPY alembic.ini ./
COPY migrations migrations
# With the experiment trackers (TensorBoard, W&B offline, MLflow): optional extras.
RUN pip install -e ".[trackers,ocr]"

RUN useradd --create-home --uid 1001 treegrpo && mkdir -p /data && chown treegrpo /data
USER treegrpo
CMD ["treegrpo", "worker", "--concurrency", "1"]
