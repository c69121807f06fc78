# A CPU worker: runs every job kind on the CPU (the shipped digits model trains in minutes).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    GRADIO_ANALYTICS_ENABLED=False

WORKDIR /app
COPY requirements/worker.txt requirements/worker.txt
# The CPU build of the pinned torch; PyPI's default Linux wheel is the CUDA one.
RUN pip install -r requirements/worker.txt --index-url https://download.pytorch.org/whl/cpu

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

RUN useradd --create-home --uid 1000 treegrpo && mkdir -p /data && chown treegrpo /data
USER treegrpo
CMD ["treegrpo", "worker", "--concurrency", "1"]
