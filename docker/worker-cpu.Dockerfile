# A CPU worker: runs every job kind on the CPU (the shipped digits model trains in minutes).
# BASE_IMAGE: any Debian-like image with Python 3.11 whose `python` and `pip` come first on PATH;
# docker/local-base.sh makes one where no registry can be reached.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
# The index of the CPU build of the pinned torch, next to PyPI (which has every other package).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    GRADIO_ANALYTICS_ENABLED=False

WORKDIR /app
COPY requirements/worker.txt requirements/worker.txt
# The CPU build of the pinned torch; PyPI's default Linux wheel is the CUDA one. Its local version
# (2.13.0+cpu) sorts above PyPI's 2.13.0, so pip takes it from TORCH_INDEX_URL or from a wheel in
# docker/wheels/ (empty in git; the local build puts the host's CPU wheel there).
RUN --mount=type=bind,source=docker/wheels,target=/wheels \
    pip install --find-links /wheels --extra-index-url "${TORCH_INDEX_URL}" \
        -r requirements/worker.txt

# The project's own dependencies (with the trackers and ocr extras) before its code, read from
# pyproject.toml alone: a change to the code or the README then reuses this layer instead of
# downloading and installing every package again.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['trackers'] + p['optional-dependencies']['ocr']))" >/tmp/deps.txt \
    && pip install -r /tmp/deps.txt \
    && rm /tmp/deps.txt

COPY README.md ./
COPY treegrpo treegrpo
COPY backend backend
COPY workers workers
COPY frontend frontend
COPY rewardserve rewardserve
# Migrations sit beside the packages; an editable install keeps `backend` importing from /app,
# where `treegrpo migrate` finds alembic.ini and migrations/ (backend/migrate.py).
COPY alembic.ini ./
COPY migrations migrations
# With the experiment trackers (TensorBoard, W&B offline, MLflow): optional extras, installed above.
RUN pip install --no-deps -e ".[trackers,ocr]"

# /data/artifacts exists in the image and belongs to treegrpo, so the named volume mounted there
# starts with that owner (an empty volume takes the image folder's); without it the volume's root
# is root's and no job can write its log.
RUN useradd --create-home --uid 1000 treegrpo \
    && mkdir -p /data/artifacts \
    && chown -R treegrpo:treegrpo /data
USER treegrpo
CMD ["treegrpo", "worker", "--concurrency", "1"]
