# PostgreSQL 15 from Debian's packages, for the local compose check only (make compose-smoke) on
# machines that reach no image registry. Users run the official image named in
# docker-compose.yml. It honours the part of that image's contract the compose file uses:
# POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB on first start, data in
# /var/lib/postgresql/data, `postgres [args]` as the command, pg_isready on PATH.
ARG BASE_IMAGE=treegrpo-local-base:bookworm
FROM ${BASE_IMAGE}

RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql

ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
COPY docker/local-postgres-entrypoint.sh /usr/local/bin/local-postgres-entrypoint.sh
USER postgres
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/local-postgres-entrypoint.sh"]
CMD ["postgres"]
