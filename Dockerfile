# syntax=docker/dockerfile:1
# The machinedb application image: cdc-relay, dhcp-generator and the alembic migrations.
#
#   docker build -t machinedb .
#   docker run --rm machinedb                      # prints the commands' help
#   docker run --rm -e DATABASE_URL=... machinedb alembic upgrade head
#
# docker-compose.yml runs every service of the pipeline from this image; see
# docs/deployment.md.

FROM python:3.11-slim AS build
# A virtualenv keeps the runtime stage a plain copy of /opt/machinedb.
RUN python -m venv /opt/machinedb
ENV PATH=/opt/machinedb/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cdc ./cdc
COPY generator ./generator
COPY machinedb ./machinedb
RUN pip install --no-cache-dir --disable-pip-version-check .

FROM python:3.11-slim
# The real DHCP servers' checkers: the generator validates every candidate file with
# `dhcpd -t` / `kea-dhcp4 -t` before it replaces the live one (skipped when absent).
# Build with --build-arg DHCP_CHECKERS= for a relay-only image without them.
ARG DHCP_CHECKERS="isc-dhcp-server kea-dhcp4-server"
RUN set -eux; \
    if [ -n "$DHCP_CHECKERS" ]; then \
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $DHCP_CHECKERS; \
        rm -f /usr/sbin/policy-rc.d; rm -rf /var/lib/apt/lists/*; \
    fi

# One fixed uid/gid: the dhcpd and kea images (deploy/dhcpd, deploy/kea) give the shared
# volumes' directories to the same ids, whichever container mounts them first.
ARG MACHINEDB_UID=10001
RUN set -eux; \
    groupadd --system --gid "$MACHINEDB_UID" machinedb; \
    useradd --system --uid "$MACHINEDB_UID" --gid machinedb --home-dir /app \
        --no-create-home --shell /usr/sbin/nologin machinedb; \
    install -d -o machinedb -g machinedb -m 0755 /var/lib/machinedb/dhcp; \
    install -d -o machinedb -g machinedb -m 2770 /run/kea

COPY --from=build /opt/machinedb /opt/machinedb
ENV PATH=/opt/machinedb/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# alembic runs from the repository layout: alembic.ini next to migrations/.
WORKDIR /app
COPY alembic.ini ./
COPY migrations ./migrations
# The generator's reload command when ISC dhcpd runs in another container (compose).
# Kea needs none: the generator sends config-reload through its control socket.
COPY deploy/dhcpd/request-reload /usr/local/bin/machinedb-dhcpd-reload
RUN chmod 0755 /usr/local/bin/machinedb-dhcpd-reload

USER machinedb:machinedb
CMD ["sh", "-c", "cdc-relay --help; echo; dhcp-generator --help; echo; echo 'migrations: alembic upgrade head'"]
