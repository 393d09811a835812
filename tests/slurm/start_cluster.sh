#!/usr/bin/env bash
# Start a real one-node SLURM cluster on this machine, for the SLURM launcher's
# tests. Usage:
#
#   eval "$(tests/slurm/start_cluster.sh [STATE_DIR])"
#
# STATE_DIR (default: a new mktemp directory) receives slurm.conf,
# slurmdbd.conf, the daemons' state, spool, pid and log files and a private
# MariaDB data directory. The only line on stdout is `export SLURM_CONF=...`;
# progress goes to stderr. Stop it with tests/slurm/stop_cluster.sh STATE_DIR.
#
# Idempotent: daemons of STATE_DIR that are already running are left alone;
# missing packages are installed with apt-get (as root), munged is started
# once per machine and shared by every cluster started with this script.
#
# The cluster runs slurmctld, slurmd, and slurmdbd backed by MariaDB, because
# submitit reads job states with `sacct`, and `sacct` answers only from
# slurmdbd ("Slurm accounting storage is disabled" otherwise; `sacct -c` on a
# jobcomp/filetxt log is not what submitit calls and lists only ended jobs).
#
# Ports: the first free ones from 6817 up (slurmctld, slurmd, slurmdbd,
# MariaDB, all on 127.0.0.1), so that several clusters can run side by side.
# Environment knobs: FLEA_SLURM_MEM_MB (node RealMemory, default
# min(4096, half of the machine's memory)), FLEA_SLURM_TIMEOUT_S (how long to
# wait for the node and the smoke job, default 120), FLEA_SLURM_GPUS (default
# 0: a count of make-believe GPUs, empty files in STATE_DIR as their device
# files, so that jobs asking for --gpus-per-node can be scheduled on a machine
# without GPUs; the job sees SLURM_GPUS_* but no GPU and no
# CUDA_VISIBLE_DEVICES).
set -euo pipefail

exec 3>&1 1>&2   # stdout is reserved for the final export line
log() { echo "start_cluster: $*" >&2; }
die() { echo "start_cluster: error: $*" >&2; exit 1; }

TIMEOUT_S=${FLEA_SLURM_TIMEOUT_S:-120}

if [ "$#" -ge 1 ] && [ -n "$1" ]; then
    STATE_DIR=$1
    mkdir -p "$STATE_DIR"
else
    STATE_DIR=$(mktemp -d -t flea-slurm.XXXXXX)
fi
STATE_DIR=$(cd "$STATE_DIR" && pwd -P)
# slurm.conf has no quoting for paths with spaces.
case "$STATE_DIR" in *[[:space:]]*) die "state directory must not contain whitespace: $STATE_DIR";; esac

# ---------------------------------------------------------------- packages
need_install=()
command -v slurmctld >/dev/null 2>&1 || [ -x /usr/sbin/slurmctld ] || need_install+=(slurm-wlm)
[ -x /usr/sbin/munged ] || need_install+=(munge)
[ -x /usr/sbin/slurmdbd ] || need_install+=(slurmdbd)
[ -x /usr/sbin/mariadbd ] || need_install+=(mariadb-server)
if [ "${#need_install[@]}" -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing ${need_install[*]}; run as root to install them with apt-get"
    log "installing ${need_install[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    # Keep the packages' postinst from starting system-wide services (there
    # may be no init system); Debian's policy-rc.d mechanism, removed after.
    added_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    apt_status=0
    { apt-get update -q && apt-get install -y -q --no-install-recommends \
        slurm-wlm munge slurmdbd mariadb-server; } >&2 || apt_status=$?
    [ -z "$added_policy" ] || rm -f /usr/sbin/policy-rc.d
    [ "$apt_status" = 0 ] || die "apt-get failed ($apt_status)"
fi
export PATH="$PATH:/usr/sbin:/sbin"

# ------------------------------------------------------------------- munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || die "munged is not running and only root can start it"
    mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
    chmod 755 /run/munge
    if [ ! -s /etc/munge/munge.key ]; then
        log "creating /etc/munge/munge.key"
        if command -v mungekey >/dev/null 2>&1; then
            runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        fi
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    log "starting munged"
    # --force: a munged killed earlier may have left its socket behind.
    mkdir -p "$STATE_DIR/log"
    runuser -u munge -- /usr/sbin/munged --force </dev/null >>"$STATE_DIR/log/munged.out" 2>&1 3>&- \
        || { cat "$STATE_DIR/log/munged.out"; die "munged failed"; }
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.2
    done
    munge -n | unmunge >/dev/null || die "munged does not answer"
fi

# ----------------------------------------------------------------- helpers
# pid_alive PIDFILE NAME: the pid in PIDFILE runs a process called NAME.
pid_alive() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}
port_in_use() { (exec 9<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
next_free_port() {  # the first port from $1 up that nothing listens on
    local p=$1
    while port_in_use "$p"; do p=$((p + 1)); done
    echo "$p"
}
# Daemons get none of our descriptors: a caller's `$(start_cluster.sh)` waits
# for every holder of fd 3 (its stdout) to close it.
daemon() {  # daemon NAME COMMAND...: start COMMAND, its output to log/NAME.out
    local name=$1
    shift
    "$@" </dev/null >>"$D/log/$name.out" 2>&1 3>&-
}
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local secs=$1 what=$2 end
    shift 2
    end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$end" ] || return 1
        sleep 0.5
    done
    log "$what"
}

D=$STATE_DIR
mkdir -p "$D/state" "$D/spool" "$D/log" "$D/db"
CONF=$D/slurm.conf
DBD_CONF=$D/slurmdbd.conf
export SLURM_CONF=$CONF
NODE=$(hostname)

any_running=
for pair in db/mariadbd.pid:mariadbd slurmdbd.pid:slurmdbd slurmctld.pid:slurmctld slurmd.pid:slurmd; do
    pid_alive "$D/${pair%%:*}" "${pair##*:}" && any_running=1
done

# ------------------------------------------------------------------ config
if [ -z "$any_running" ] || [ ! -f "$CONF" ]; then
    CTLD_PORT=$(next_free_port 6817)
    SLURMD_PORT=$(next_free_port "$((CTLD_PORT + 1))")
    DBD_PORT=$(next_free_port "$((SLURMD_PORT + 1))")
    DB_PORT=$(next_free_port "$((DBD_PORT + 1))")
    CPUS=$(nproc)
    mem_total_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    MEM_MB=${FLEA_SLURM_MEM_MB:-$(( mem_total_mb / 2 < 4096 ? mem_total_mb / 2 : 4096 ))}
    GPUS=${FLEA_SLURM_GPUS:-0}
    case "$GPUS" in ''|*[!0-9]*) die "FLEA_SLURM_GPUS must be a count, not '$GPUS'";; esac
    gres_types= node_gres=
    if [ "$GPUS" -gt 0 ]; then
        gres_types="GresTypes=gpu"
        node_gres="Gres=gpu:$GPUS"
        # gres/gpu drops GPUs without a device file; empty files stand in.
        for i in $(seq 0 $((GPUS - 1))); do : > "$D/fake-gpu$i"; done
        echo "NodeName=$NODE Name=gpu File=$D/fake-gpu[0-$((GPUS - 1))]" > "$D/gres.conf"
    else
        rm -f "$D/gres.conf"
    fi
    log "writing $CONF (node $NODE, CPUs=$CPUS, RealMemory=$MEM_MB, GPUs=$GPUS, ports $CTLD_PORT/$SLURMD_PORT/$DBD_PORT/$DB_PORT)"
    cat > "$CONF" <<EOF
# Written by tests/slurm/start_cluster.sh: a one-node test cluster.
ClusterName=flea
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=60
KillWait=5
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
$gres_types
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB $node_gres State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    cat > "$DBD_CONF" <<EOF
# Written by tests/slurm/start_cluster.sh.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$D/slurmdbd.pid
LogFile=$D/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DBD_CONF"
    echo "$DB_PORT" > "$D/db/port"
else
    log "reusing $CONF (some of its daemons are running)"
fi
DB_PORT=$(cat "$D/db/port")

# ----------------------------------------------------------------- MariaDB
DB_SOCK=$D/db/mariadbd.sock
if ! pid_alive "$D/db/mariadbd.pid" mariadbd; then
    if [ ! -d "$D/db/data/mysql" ]; then
        log "initialising MariaDB in $D/db/data"
        mariadb-install-db --no-defaults --datadir="$D/db/data" --user=root \
            --auth-root-authentication-method=socket --skip-test-db > "$D/log/mariadb-install.log" 2>&1 \
            || { cat "$D/log/mariadb-install.log"; die "mariadb-install-db failed"; }
    fi
    log "starting mariadbd on 127.0.0.1:$DB_PORT"
    rm -f "$DB_SOCK"
    # mariadbd does not daemonize: a subshell in its own session becomes it.
    ( exec setsid /usr/sbin/mariadbd --no-defaults --datadir="$D/db/data" --user=root \
        --socket="$DB_SOCK" --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
        --pid-file="$D/db/mariadbd.pid" --log-error="$D/log/mariadb.log" \
        --innodb-buffer-pool-size=64M --innodb-log-file-size=16M --innodb-lock-wait-timeout=900 \
        </dev/null >>"$D/log/mariadbd.out" 2>&1 3>&- ) &
    wait_for 60 "mariadbd is up" mariadb --no-defaults --socket="$DB_SOCK" -u root -e 'SELECT 1' \
        || { tail -n 20 "$D/log/mariadb.log"; die "mariadbd did not start"; }
fi
mariadb --no-defaults --socket="$DB_SOCK" -u root -e "
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
    FLUSH PRIVILEGES;"

# ------------------------------------------------------------ slurm daemons
if ! pid_alive "$D/slurmdbd.pid" slurmdbd; then
    log "starting slurmdbd"
    daemon slurmdbd /usr/sbin/slurmdbd || { tail -n 20 "$D/log/slurmdbd.log"; die "slurmdbd failed"; }
    wait_for 60 "slurmdbd is up" sacctmgr -n -i list cluster \
        || { tail -n 20 "$D/log/slurmdbd.log"; die "slurmdbd does not answer"; }
fi
if ! pid_alive "$D/slurmctld.pid" slurmctld; then
    log "starting slurmctld"
    daemon slurmctld /usr/sbin/slurmctld || { tail -n 20 "$D/log/slurmctld.log"; die "slurmctld failed"; }
fi
if ! pid_alive "$D/slurmd.pid" slurmd; then
    log "starting slurmd"
    daemon slurmd /usr/sbin/slurmd || { tail -n 20 "$D/log/slurmd.log"; die "slurmd failed"; }
fi

node_idle() { sinfo -h -n "$NODE" -o '%t' 2>/dev/null | grep -qx 'idle\|mix\|alloc'; }
wait_for "$TIMEOUT_S" "node $NODE is up" node_idle || {
    sinfo -N -l || true
    tail -n 20 "$D/log/slurmctld.log" "$D/log/slurmd.log" || true
    die "node $NODE did not become idle within ${TIMEOUT_S}s"
}

# A job must run to the end, and sacct (what submitit polls) must see it.
jobid=$(sbatch --parsable -J flea-smoke -o /dev/null -e /dev/null --wrap true) || die "sbatch failed"
jobid=${jobid%%;*}
smoke_done() { sacct -n -X -P -o State -j "$jobid" | grep -qx COMPLETED; }
wait_for "$TIMEOUT_S" "smoke job $jobid completed and is visible to sacct" smoke_done || {
    scontrol show job "$jobid" || true
    sacct -j "$jobid" || true
    die "smoke job $jobid did not complete within ${TIMEOUT_S}s"
}

printf 'export SLURM_CONF=%q\n' "$CONF" >&3
