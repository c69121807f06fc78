# Redis 7 from Debian's packages, for the local compose check only (make compose-smoke) on
# machines that reach no image registry. Users run the official image named in
# docker-compose.yml. Like that image: data in /data (the working folder), redis-cli on PATH, and
# protected mode off (the compose network, not a password, keeps it private).
ARG BASE_IMAGE=treegrpo-local-base:bookworm
FROM ${BASE_IMAGE}

RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data \
    && chown redis:redis /data

COPY docker/local-redis-entrypoint.sh /usr/local/bin/local-redis-entrypoint.sh
WORKDIR /data
USER redis
EXPOSE 6379
ENTRYPOINT ["/usr/local/bin/local-redis-entrypoint.sh"]
CMD ["redis-server"]
