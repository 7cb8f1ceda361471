#!/bin/bash
# kea-ctrl-agent for docker-compose (profile "kea-pair"): one server's agent of a Kea HA
# pair. Kea 2.2's peers send each other heartbeats and lease updates over HTTP to the
# partner's agent, which hands them to its kea-dhcp4 through the unix control socket
# in the /run/kea volume it shares with that kea-dhcp4.
#
# Waits until `dhcp-generator --kea-ctrl-agent-config` (the one-shot kea-agent-config-a
# or -b) has written the config: it listens on this server's address and port of the
# dhcp_failover row (which must be this container's address) and names the socket.
# Then runs kea-ctrl-agent in the foreground, its pid file in a directory of this
# container emptied first: a pid file left by the previous start holds a PID that the
# new agent may have itself, and Kea then refuses to start ("already running").
#
# Environment: KEA_CTRL_AGENT_CONF (default /var/lib/machinedb/dhcp/kea-ctrl-agent.conf).
set -euo pipefail

CONF=${KEA_CTRL_AGENT_CONF:-/var/lib/machinedb/dhcp/kea-ctrl-agent.conf}
export KEA_PIDFILE_DIR=/run/kea-ctrl-agent KEA_LOCKFILE_DIR=/run/kea-ctrl-agent
rm -rf "$KEA_PIDFILE_DIR"
install -d -m 0750 "$KEA_PIDFILE_DIR"

stopping=0
trap 'stopping=1' TERM INT
waited=0
until [ -s "$CONF" ] || [ "$stopping" -eq 1 ]; do
    if [ $((waited % 50)) -eq 0 ]; then
        echo "kea-ctrl-agent-entrypoint: waiting for kea-agent-config to write $CONF" >&2
    fi
    sleep 0.2
    waited=$((waited + 1))
done
[ "$stopping" -eq 1 ] && exit 0
trap - TERM INT

exec /usr/sbin/kea-ctrl-agent -c "$CONF"
