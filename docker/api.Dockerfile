# The API process: FastAPI + the Gradio dashboard at /ui. No torch (the API never imports it).
# BASE_IMAGE: any Debian-like image with Python 3.11 whose `python` and `pip` come first on PATH;
# docker/local-base.sh makes one where no registry can be reached.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    GRADIO_ANALYTICS_ENABLED=False

WORKDIR /app
COPY requirements/api.txt requirements/api.txt
RUN pip install -r requirements/api.txt

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
RUN pip install --no-deps -e .

# /data/artifacts exists in the image and belongs to treegrpo, so the named volume mounted there
# starts with that owner (an empty volume takes the image folder's); without it the volume's root
# is root's and no job can write its log.
RUN useradd --create-home --uid 1000 treegrpo \
    && mkdir -p /data/artifacts \
    && chown -R treegrpo:treegrpo /data
USER treegrpo
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/v1/health', timeout=2)"]
CMD ["treegrpo", "serve", "--host", "0.0.0.0", "--port", "8000"]
