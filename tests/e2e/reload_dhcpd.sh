#!/usr/bin/env bash
# (Re)start ISC dhcpd inside a network namespace: the reload command the end-to-end tests
# give the generator (dhcpd has no reload: a restart with the new file is the reload).
#
#   reload_dhcpd.sh NETNS IFACE CONF LEASES PIDFILE [STAMPFILE]
#
# Stops the dhcpd named by PIDFILE (if any), starts a new one on IFACE in NETNS and exits 0
# once it serves. dhcpd is started in daemon mode: its parent exits only after the config
# was read and the interface opened, non-zero if the config is bad, so no sleep is needed.
# STAMPFILE, if given, gets one line "<epoch seconds> <exit code>" per call (the benchmark
# reads it as the moment dhcpd reloaded). dhcpd's start-up messages go to PIDFILE's .log.
#
# The stop is SIGTERM (dhcpd 4.4.3-P1 has no handler for it: it ends at once, as with
# SIGKILL; bench/dhcpd_restart.py). The daemon's parent is PID 1, so once it exited it
# stays a zombie until PID 1 reaps it (~1.6 s on the build machines): a zombie has closed
# its sockets and counts as stopped here, or every reload would wait for PID 1.
set -uo pipefail

if [[ $# -lt 5 ]]; then
    echo "usage: $0 NETNS IFACE CONF LEASES PIDFILE [STAMPFILE]" >&2
    exit 2
fi
netns=$1 iface=$2 conf=$3 leases=$4 pidfile=$5 stamp=${6:-}
log="${pidfile%.pid}.log"
STOP_TRIES=250 # x 20 ms = 5 s before SIGKILL

stop_old() {
    [[ -s $pidfile ]] || return 0
    local pid
    pid=$(<"$pidfile")
    # only a dhcpd: never signal a pid that was recycled for something else
    [[ $pid =~ ^[0-9]+$ && "$(cat "/proc/$pid/comm" 2>/dev/null)" == dhcpd ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < STOP_TRIES; i++)); do
        running "$pid" || return 0
        sleep 0.02
    done
    kill -KILL "$pid" 2>/dev/null
    while running "$pid"; do sleep 0.02; done
}

running() { # neither gone nor a zombie
    local state
    state=$(cut -d ' ' -f 3 "/proc/$1/stat" 2>/dev/null) && [[ $state != Z ]]
}

stop_old
rm -f "$pidfile"
touch "$leases"
ip netns exec "$netns" /usr/sbin/dhcpd -4 -q -cf "$conf" -lf "$leases" -pf "$pidfile" "$iface" \
    </dev/null >>"$log" 2>&1
rc=$?
if [[ $rc -ne 0 ]]; then
    echo "dhcpd failed to start with $conf (exit $rc); see $log" >&2
    tail -n 5 "$log" >&2
fi
if [[ -n $stamp ]]; then
    echo "$(date +%s.%N) $rc" >>"$stamp"
fi
exit "$rc"
