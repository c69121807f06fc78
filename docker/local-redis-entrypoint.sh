#!/bin/sh
# `redis-server [args]` (the compose file's command) with protected mode off, as in the official
# image: the compose network, not a password, keeps the server private.
set -eu
if [ "${1:-}" = redis-server ]; then
    shift
fi
exec redis-server "$@" --protected-mode no
