#!/bin/bash
# kea-dhcp4 for docker-compose (profiles "kea" and "kea-pair").
#
# Waits until dhcp-generator has written the configuration into the shared volume, then
# runs kea-dhcp4 in the foreground. The generator applies later files with
# `config-reload` through the control socket (dhcp-generator --kea-control-socket),
# which lives in the /run/kea volume shared with it: the directory is setgid to the generator's group and
# the umask leaves the socket group-writable, so the non-root generator may connect.
#
# Kea reads its reservations from the PostgreSQL hosts database the config names
# (hosts-database, with no password in it): KEA_DB_PASSWORD is written into a password
# file of mode 0600 that Kea's libpq reads (PGPASSFILE).
#
# Kea's pid file goes into a directory of this container, emptied first: in the shared
# /run/kea volume (Debian's default) it outlives the container, and a restarted
# kea-dhcp4, PID 1 again, would find its own PID in it and refuse to start
# (DHCP4_ALREADY_RUNNING).
#
# Environment: KEA_CONF (default /var/lib/machinedb/dhcp/kea-dhcp4.conf), MACHINEDB_GID
# (default 10001), KEA_DB_PASSWORD (unset: no password file).
set -euo pipefail

CONF=${KEA_CONF:-/var/lib/machinedb/dhcp/kea-dhcp4.conf}
GID=${MACHINEDB_GID:-10001}

export KEA_PIDFILE_DIR=/run/kea-dhcp4 KEA_LOCKFILE_DIR=/run/kea-dhcp4
rm -rf "$KEA_PIDFILE_DIR"
install -d -m 0750 "$KEA_PIDFILE_DIR"
install -d -o root -g "$GID" -m 2770 /run/kea
install -d -m 0750 /var/lib/kea
umask 0007

stopping=0
trap 'stopping=1' TERM INT
waited=0
until [ -s "$CONF" ] || [ "$stopping" -eq 1 ]; do
    if [ $((waited % 50)) -eq 0 ]; then
        echo "kea-entrypoint: waiting for the generator to write $CONF" >&2
    fi
    sleep 0.2
    waited=$((waited + 1))
done
[ "$stopping" -eq 1 ] && exit 0
trap - TERM INT

if [ -n "${KEA_DB_PASSWORD:-}" ]; then
    PGPASSFILE=/run/kea-db/pgpass
    install -d -m 0700 /run/kea-db
    # host:port:database:user:password, with ':' and '\' in the password escaped
    escaped=$(printf '%s' "$KEA_DB_PASSWORD" | sed -e 's/[\\:]/\\&/g')
    (umask 0077 && printf '*:*:*:*:%s\n' "$escaped" > "$PGPASSFILE")
    export PGPASSFILE
    unset KEA_DB_PASSWORD
fi

exec /usr/sbin/kea-dhcp4 -c "$CONF"
