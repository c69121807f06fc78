# A GPU worker on a CUDA base with a CUDA build of the pinned torch. One worker process per GPU
# (concurrency 1); a job asking for N GPUs is started with `accelerate launch`.
# BASE_IMAGE: the CUDA runtime. The local check (docker/compose_smoke.py --gpu-layers) builds the
# same steps on a plain Debian base with the CPU wheel, which is all a machine without a registry
# or a GPU can verify.
ARG BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${BASE_IMAGE}
# The index of the CUDA build of the pinned torch, next to PyPI (which has every other package).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

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
# The CUDA build's local version (2.13.0+cu128) sorts above PyPI's 2.13.0, so pip takes it from
# TORCH_INDEX_URL (or from a wheel in docker/wheels/, empty in git).
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

# uid 1000 as in the CPU images, since they share the artifacts volume (a file one writes, the
# other must be able to replace): Ubuntu's own `ubuntu` user (uid 1000) goes first. /data/artifacts
# exists and belongs to treegrpo, so the named volume mounted there starts with that owner.
RUN if id -u ubuntu >/dev/null 2>&1; then userdel --remove ubuntu; fi \
    && useradd --create-home --uid 1000 treegrpo \
    && mkdir -p /data/artifacts \
    && chown -R treegrpo:treegrpo /data
USER treegrpo
CMD ["treegrpo", "worker", "--concurrency", "1"]
