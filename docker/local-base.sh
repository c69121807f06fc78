#!/usr/bin/env bash
# A Debian bookworm base image made on this machine, for hosts that reach Debian's archive and
# PyPI but no image registry. It stands in for python:3.11-slim: Python 3.11 in a venv at
# /opt/venv whose `python` and `pip` come first on PATH, ca-certificates, nothing else.
#
#     docker/local-base.sh [IMAGE]          # default treegrpo-local-base:bookworm
#
# Needs root, mmdebstrap (apt-get install mmdebstrap) and a running Docker engine. The image gets
# the host's CA bundle (HOST_CA_FILE, default /etc/ssl/certs/ca-certificates.crt) in place of
# Debian's, so pip inside builds trusts what the host's pip trusts (a TLS-inspecting proxy's CA,
# say). The image is for local builds only; nothing publishes it.
#
# Used by `make compose-smoke` (docker/compose_smoke.py), which passes it to the Dockerfiles as
# --build-arg BASE_IMAGE and builds PostgreSQL and Redis images on it (docker/local-*.Dockerfile).
set -euo pipefail

IMAGE=${1:-treegrpo-local-base:bookworm}
SUITE=${SUITE:-bookworm}
HOST_CA_FILE=${HOST_CA_FILE:-/etc/ssl/certs/ca-certificates.crt}
DOCKER=${DOCKER:-docker}

command -v mmdebstrap >/dev/null || {
    echo "local-base.sh: mmdebstrap is missing (apt-get install mmdebstrap)" >&2
    exit 1
}
[ -r "$HOST_CA_FILE" ] || {
    echo "local-base.sh: no CA bundle at $HOST_CA_FILE (set HOST_CA_FILE)" >&2
    exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# minbase: dpkg, apt, coreutils, passwd (useradd), bash; no docs. The venv is made inside the
# chroot, so its interpreter links to the image's own /usr/bin/python3.11.
mmdebstrap --variant=minbase --quiet \
    --include=python3,python3-venv,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook="cp '$HOST_CA_FILE' \"\$1/etc/ssl/certs/ca-certificates.crt\"" \
    --customize-hook='chroot "$1" python3 -m venv /opt/venv' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    "$SUITE" "$work/rootfs.tar"

"$DOCKER" import \
    --change 'ENV VIRTUAL_ENV=/opt/venv' \
    --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["python3"]' \
    "$work/rootfs.tar" "$IMAGE" >/dev/null

"$DOCKER" run --rm "$IMAGE" python -c 'import sys, ssl; print(sys.version.split()[0], ssl.OPENSSL_VERSION)'
echo "local-base.sh: $IMAGE"
