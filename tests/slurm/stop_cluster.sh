#!/usr/bin/env bash
# Stop the daemons of a cluster started by tests/slurm/start_cluster.sh:
#
#   tests/slurm/stop_cluster.sh [STATE_DIR]
#
# STATE_DIR defaults to the directory of $SLURM_CONF. Its jobs are cancelled,
# then slurmd, slurmctld, slurmdbd and its MariaDB are stopped through their
# pid files (nothing is killed by name). munged is left running: it is one per
# machine and shared by every cluster. The state directory is kept.
set -uo pipefail

if [ "$#" -ge 1 ] && [ -n "$1" ]; then
    D=$1
elif [ -n "${SLURM_CONF:-}" ]; then
    D=$(dirname "$SLURM_CONF")
else
    echo "usage: $0 STATE_DIR (or set SLURM_CONF)" >&2
    exit 2
fi
[ -d "$D" ] || { echo "stop_cluster: no such directory: $D" >&2; exit 0; }
D=$(cd "$D" && pwd -P)
export PATH="$PATH:/usr/sbin:/sbin"

alive() {  # alive PID: running and not a zombie
    [ -d "/proc/$1" ] && ! grep -q '^[0-9]* (.*) Z' "/proc/$1/stat" 2>/dev/null
}
pid_of() {  # pid_of PIDFILE NAME: the pid, if it is alive and called NAME
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] && echo "$pid"
}

if [ -f "$D/slurm.conf" ] && pid_of "$D/slurmctld.pid" slurmctld >/dev/null; then
    SLURM_CONF=$D/slurm.conf timeout 10 scancel --full --quiet --user="$(id -un)" 2>/dev/null
    sleep 1
fi

for pair in slurmd.pid:slurmd slurmctld.pid:slurmctld slurmdbd.pid:slurmdbd db/mariadbd.pid:mariadbd; do
    file=$D/${pair%%:*} name=${pair##*:}
    pid=$(pid_of "$file" "$name") || continue
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 100); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        echo "stop_cluster: $name ($pid) ignored SIGTERM; killing it" >&2
        kill -KILL "$pid" 2>/dev/null
    fi
    echo "stop_cluster: stopped $name ($pid)" >&2
done
exit 0
