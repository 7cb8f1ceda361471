#!/bin/bash
# ISC dhcpd under a small supervisor, for docker-compose.
#
# dhcpd has no reload: a new configuration needs a restart. The generator runs in another
# container, so it asks through the shared volume instead of a signal:
#   - it writes a request id to $RELOAD_DIR/request (machinedb-dhcpd-reload does this);
#   - this script checks the file with `dhcpd -t`, restarts dhcpd, and answers
#     "<id> ok" or "<id> failed: <reason>" in $RELOAD_DIR/done;
#   - the generator's reload command exits 0 or 1 accordingly, so a failed reload makes
#     the generator restore the previous file and ask again.
# If dhcpd dies on its own, it is started again with the current file.
#
# The stop is SIGTERM, then a wait for the exit (bench/dhcpd_restart.py,
# docs/benchmarks.md). Debian's dhcpd 4.4.3-P1 is built without ENABLE_GENTLE_SHUTDOWN and
# installs no SIGTERM handler, so SIGTERM ends it at once, exactly as SIGKILL does: it
# exits in 10-30 ms, and clients go unanswered for a median 36 ms at 100 hosts, 85 ms at
# 10,000, 1.0-1.2 s at 100,000, all of it the new dhcpd reading its files. dhcpd fsyncs
# every lease and OMAPI host record as it writes it, so neither signal loses a committed
# record; a record cut mid-write is the risk of both, and dhcpd starts anyway (it drops a
# cut lease, and keeps a cut host without its address). dhcpd's own graceful shutdown
# (OMAPI's control object) takes ~12 s and sends a failover peer through partner-down:
# not for a restart. Should a dhcpd ever ignore SIGTERM, it gets SIGKILL after
# STOP_TIMEOUT.
#
# Environment: DHCPD_CONF (default /var/lib/machinedb/dhcp/dhcpd.conf), DHCPD_INTERFACES
# (space-separated; empty = every interface with a subnet declaration), DHCPD_LEASES
# (default /var/lib/dhcp/dhcpd.leases).
set -uo pipefail

CONF=${DHCPD_CONF:-/var/lib/machinedb/dhcp/dhcpd.conf}
LEASES=${DHCPD_LEASES:-/var/lib/dhcp/dhcpd.leases}
RELOAD_DIR=${RELOAD_DIR:-$(dirname "$CONF")/reload}
PID_FILE=/run/dhcpd.pid
POLL=0.2            # seconds between looks at the request file
SETTLE=1            # seconds dhcpd must stay up after a restart to count as reloaded
STOP_TIMEOUT=5      # seconds between SIGTERM and SIGKILL (dhcpd exits in 10-30 ms)
read -r -a INTERFACES <<< "${DHCPD_INTERFACES:-}"

dhcpd_pid=""
stopping=0

log() { echo "dhcpd-entrypoint: $*" >&2; }

start_dhcpd() {
    rm -f "$PID_FILE"
    /usr/sbin/dhcpd -4 -f -cf "$CONF" -lf "$LEASES" -pf "$PID_FILE" "${INTERFACES[@]}" &
    dhcpd_pid=$!
}

# Running: not gone and not a zombie (an exited child stays one until bash reaps it).
alive() {
    local state
    [ -n "$dhcpd_pid" ] && state=$(cut -d ' ' -f 3 "/proc/$dhcpd_pid/stat" 2>/dev/null) \
        && [ "$state" != Z ]
}

stop_dhcpd() {
    local tries
    if alive; then
        kill -TERM "$dhcpd_pid" 2>/dev/null
        for ((tries = STOP_TIMEOUT * 100; tries > 0; tries--)); do
            alive || break
            sleep 0.01
        done
        if alive; then
            log "dhcpd (pid $dhcpd_pid) still runs ${STOP_TIMEOUT}s after SIGTERM: SIGKILL"
            kill -KILL "$dhcpd_pid" 2>/dev/null
        fi
    fi
    [ -n "$dhcpd_pid" ] && wait "$dhcpd_pid" 2>/dev/null
    dhcpd_pid=""
}

answer() {  # answer ID TEXT: atomically, so the reader never sees half a line
    printf '%s %s\n' "$1" "$2" > "$RELOAD_DIR/done.tmp" && mv -f "$RELOAD_DIR/done.tmp" "$RELOAD_DIR/done"
}

reload() {  # reload ID
    local output reason
    if ! output=$(/usr/sbin/dhcpd -4 -t -cf "$CONF" 2>&1); then
        reason=$(echo "$output" | grep -m 1 -E 'line [0-9]+: ' || echo "see the dhcpd container's log")
        log "request $1: dhcpd -t rejected $CONF ($reason); dhcpd keeps running the old one"
        answer "$1" "failed: dhcpd -t rejected the file: $reason"
        return
    fi
    stop_dhcpd
    start_dhcpd
    sleep "$SETTLE"
    if alive; then
        log "request $1: dhcpd restarted with $CONF"
        answer "$1" "ok"
    else
        log "request $1: dhcpd exited right after the restart"
        answer "$1" "failed: dhcpd exited right after the restart"
    fi
}

trap 'stopping=1' TERM INT

mkdir -p "$(dirname "$LEASES")" "$RELOAD_DIR"
touch "$LEASES"
waited=0
until [ -s "$CONF" ] || [ "$stopping" -eq 1 ]; do
    if [ $((waited % 50)) -eq 0 ]; then
        log "waiting for the generator to write $CONF"
    fi
    sleep "$POLL"
    waited=$((waited + 1))
done
[ "$stopping" -eq 1 ] && exit 0

start_dhcpd
log "dhcpd started (pid $dhcpd_pid) with $CONF"
# A request made before dhcpd started is answered by this start: it read the current file.
last=$(cat "$RELOAD_DIR/request" 2>/dev/null || true)
if [ -n "$last" ] && ! grep -q "^$last " "$RELOAD_DIR/done" 2>/dev/null; then
    sleep "$SETTLE"
    if alive; then answer "$last" "ok"; else answer "$last" "failed: dhcpd exited at start"; fi
fi

while [ "$stopping" -eq 0 ]; do
    sleep "$POLL"
    request=$(cat "$RELOAD_DIR/request" 2>/dev/null || true)
    if [ -n "$request" ] && [ "$request" != "$last" ]; then
        last=$request
        reload "$request"
    elif ! alive && [ "$stopping" -eq 0 ]; then
        log "dhcpd is not running; starting it again with $CONF in 2 s"
        sleep 2
        start_dhcpd
    fi
done

log "stopping dhcpd"
stop_dhcpd
exit 0
