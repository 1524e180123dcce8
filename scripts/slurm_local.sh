#!/usr/bin/env bash
# A real single-node Slurm 22.05 cluster on localhost, for e2espk's tests and CI.
#
# Usage: scripts/slurm_local.sh {up|down|status|env}
#   up      install the Debian packages if missing, write the config, start munged, a private
#           MariaDB, slurmdbd, slurmctld and slurmd, wait until the node is idle and sacct
#           answers, then run a smoke `srun hostname`. Re-running it while up is a fast no-op.
#   down    stop the daemons this script started (by pid file, argv[0] checked), remove the
#           /etc/slurm/slurm.conf symlink it made. Idempotent.
#   status  which daemons run, and `sinfo`.
#   env     `export SLURM_CONF=...` for clients, e.g. `eval "$(scripts/slurm_local.sh env)"`.
#
# State (config, keys, database, spool, logs, pid files) lives in $E2ESPK_SLURM_DIR
# (default /tmp/e2espk-slurm). Needs root and apt; no systemd, Docker or cgroups.
# Why each setting is there: /work/shared/notes/slurm-local.md (gotcha numbers in comments).
set -Eeuo pipefail

STATE_DIR=${E2ESPK_SLURM_DIR:-/tmp/e2espk-slurm}
ETC_DIR=$STATE_DIR/etc
RUN_DIR=$STATE_DIR/run
LOG_DIR=$STATE_DIR/log
LOG=$LOG_DIR/slurm_local.log
SLURM_CONF_FILE=$ETC_DIR/slurm.conf
SYSTEM_CONF=/etc/slurm/slurm.conf
MUNGE_KEY=$STATE_DIR/munge-key/munge.key
MUNGE_SOCKET=$RUN_DIR/munge/munge.socket
MYSQL_DATA=$STATE_DIR/mysql
MYSQL_SOCKET=$RUN_DIR/mysqld.sock
CLUSTER_NAME=e2espk
NODE=$(hostname -s)
PORTS=(6817 6818 6819) # slurmctld, slurmd, slurmdbd (gotcha 19: one cluster per port set)
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd) # start order; down goes in reverse
PACKAGES=(munge slurmctld slurmd slurm-client slurm-wlm-basic-plugins
    slurmdbd slurm-wlm-mysql-plugin mariadb-server-core mariadb-client-core)
export SLURM_CONF=$SLURM_CONF_FILE # every Slurm command below uses our config

# ---------------------------------------------------------------- helpers
say() { printf 'slurm_local: %s\n' "$*"; }

die() {
    printf 'slurm_local: ERROR: %s\n' "$*" >&2
    if [[ -f $LOG ]]; then
        printf 'slurm_local: last lines of %s:\n' "$LOG" >&2
        tail -n 15 "$LOG" | sed 's/^/    /' >&2
        printf 'slurm_local: full log: %s (daemon logs next to it); clean up with: %s down\n' \
            "$LOG" "$0" >&2
    fi
    exit 1
}

trap 'die "unexpected failure at line $LINENO: $BASH_COMMAND"' ERR

# Seconds since $1 (an $EPOCHREALTIME value), one decimal.
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

# Run a command with its output appended to the log. Daemons must not inherit the lock fd.
logged() {
    printf '+ %s\n' "$*" >>"$LOG"
    "$@" >>"$LOG" 2>&1 9>&-
}

# wait_for SECONDS COMMAND...: poll every 0.1 s until COMMAND succeeds.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

require_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (Slurm daemons run as SlurmUser=root here)"
}

# Serialise up/down: a test fixture and a developer may call us at the same time.
take_lock() {
    exec 9>"$STATE_DIR.lock"
    flock -w 300 9 || die "another slurm_local.sh holds $STATE_DIR.lock"
}

# ---------------------------------------------------------------- our daemons
pid_file() { printf '%s/%s.pid' "$RUN_DIR" "$1"; }

# our_pid NAME: print the pid from NAME's pid file if that process is alive, not a zombie
# (gotcha 17), has argv[0] == NAME, and was started for this state dir. Never matches by name
# alone, so a daemon of another cluster is never touched. The process may exit at any point
# in here, so every read tolerates a vanished file (and none uses `$(<file)`, which aborts
# the whole script under `set -e` when the file is gone).
our_pid() {
    local name=$1 pid="" stat="" argv0=""
    read -r pid 2>/dev/null <"$(pid_file "$name")" || true
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    read -r stat 2>/dev/null <"/proc/$pid/stat" || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]] || return 1
    IFS= read -r -d '' argv0 2>/dev/null <"/proc/$pid/cmdline" || true
    [[ ${argv0##*/} == "$name" ]] || return 1
    # munged and mariadbd carry the state dir in argv, the Slurm daemons in SLURM_CONF.
    # grep -z: NUL-separated entries; no pipe, so no SIGPIPE to confuse pipefail.
    grep -qszF -- "$STATE_DIR/" "/proc/$pid/cmdline" ||
        grep -qszxF -- "SLURM_CONF=$SLURM_CONF_FILE" "/proc/$pid/environ" ||
        return 1
    printf '%s\n' "$pid"
}

is_running() { our_pid "$1" >/dev/null; }

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n 1; }

node_usable() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing)$ ]]; }

sacct_answers() { timeout 10 sacct -n -j 1 >/dev/null 2>&1; }

all_running() {
    local d
    for d in "${DAEMONS[@]}"; do is_running "$d" || return 1; done
}

any_running() {
    local d
    for d in "${DAEMONS[@]}"; do is_running "$d" && return 0; done
    return 1
}

# ---------------------------------------------------------------- packages
missing_packages() {
    local p
    for p in "${PACKAGES[@]}"; do
        [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null) == ii* ]] || printf '%s ' "$p"
    done
}

apt_install() {
    DEBIAN_FRONTEND=noninteractive logged apt-get install -y --no-install-recommends "$@"
}

ensure_packages() {
    local missing guard=""
    missing=$(missing_packages)
    missing=${missing% }
    [[ -z $missing ]] && return 0
    say "installing: $missing"
    # Keep package postinst scripts from starting system-wide daemons (a no-op on images
    # whose /usr/sbin/policy-rc.d already exits 101).
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        guard=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' >"$guard" && chmod 755 "$guard"
    fi
    # shellcheck disable=SC2086 # $missing is a space-separated package list
    if ! apt_install $missing; then
        say "apt-get install failed; running apt-get update and retrying"
        if ! { logged apt-get update && apt_install $missing; }; then
            [[ -z $guard ]] || rm -f "$guard"
            die "apt-get install $missing failed"
        fi
    fi
    [[ -z $guard ]] || rm -f "$guard"
}

# ---------------------------------------------------------------- config
CONFIG_CHANGED=0 # set by write_if_changed, never reset

# write_if_changed FILE MODE: atomically replace FILE with stdin if the content differs.
write_if_changed() {
    local file=$1 mode=$2 tmp
    tmp=$(mktemp "$file.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
    else
        mv -f "$tmp" "$file"
        CONFIG_CHANGED=1
    fi
}

make_dirs() {
    mkdir -p "$STATE_DIR" "$ETC_DIR" "$RUN_DIR/munge" "$LOG_DIR" "$STATE_DIR/munge-key" \
        "$STATE_DIR/spool/ctld" "$STATE_DIR/spool/d"
    chmod 755 "$STATE_DIR" "$RUN_DIR" "$RUN_DIR/munge" # gotcha 1: socket dir a+x
    chmod 700 "$STATE_DIR/munge-key"
}

write_config() {
    local node_line first_job_id
    if [[ ! -s $MUNGE_KEY ]]; then
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
    fi
    chmod 400 "$MUNGE_KEY"
    # Gotcha 14: job ids restart at 1 in a new state dir; start them from the clock instead,
    # once per state dir, so submitit folders from an older cluster never collide.
    if [[ ! -s $STATE_DIR/first_job_id ]]; then
        echo $(($(date +%s) % 50000000 + 1000)) >"$STATE_DIR/first_job_id" # < MaxJobId 67043328
    fi
    read -r first_job_id <"$STATE_DIR/first_job_id"
    # Gotcha 6: the real hardware, else slurmd drains the node.
    node_line=$(slurmd -C 2>/dev/null | head -n 1 | sed 's/^NodeName=[^ ]* //')
    [[ $node_line == CPUs=* ]] || die "cannot read the node's hardware from 'slurmd -C'"

    write_if_changed "$SLURM_CONF_FILE" 644 <<EOF
# Generated by scripts/slurm_local.sh; edits are overwritten.
ClusterName=$CLUSTER_NAME
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=${PORTS[0]}
SlurmdPort=${PORTS[1]}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$STATE_DIR/spool/ctld
SlurmdSpoolDir=$STATE_DIR/spool/d
SlurmctldPidFile=$(pid_file slurmctld)
SlurmdPidFile=$(pid_file slurmd)
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
# Gotcha 10; sched_interval=1: a requeued job becomes eligible cred_expire s after the requeue,
# but only the periodic main scheduling pass (every 60 s by default) starts it.
SchedulerParameters=batch_sched_delay=0,sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
KillWait=5
FirstJobId=$first_job_id
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=${PORTS[2]}
AccountingStoragePass=$MUNGE_SOCKET
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 $node_line State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    # Gotcha 3: read from dirname($SLURM_CONF), mode 0600, owned by SlurmUser.
    write_if_changed "$ETC_DIR/slurmdbd.conf" 600 <<EOF
# Generated by scripts/slurm_local.sh; edits are overwritten.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=$NODE
DbdAddr=127.0.0.1
DbdPort=${PORTS[2]}
SlurmUser=root
PidFile=$(pid_file slurmdbd)
LogFile=$LOG_DIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
EOF
}

# Gotcha 16: clients and submitit find the config without SLURM_CONF. Only a missing or
# dangling path is (re)placed; somebody else's config is left alone.
link_system_conf() {
    if [[ $(readlink "$SYSTEM_CONF" 2>/dev/null) == "$SLURM_CONF_FILE" ]]; then return 0; fi
    if [[ -e $SYSTEM_CONF ]]; then
        say "warning: $SYSTEM_CONF exists and is not ours; clients need: eval \"\$($0 env)\""
        return 0
    fi
    mkdir -p "$(dirname "$SYSTEM_CONF")"
    ln -sfn "$SLURM_CONF_FILE" "$SYSTEM_CONF"
}

check_ports_free() {
    local port
    if is_running slurmctld || is_running slurmd || is_running slurmdbd; then return 0; fi
    for port in "${PORTS[@]}"; do
        if (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            die "port $port is in use by a process this script did not start (another Slurm" \
                "cluster?); stop it first (see 'ss -ltnp')"
        fi
    done
}

# ---------------------------------------------------------------- starting daemons
start_munged() {
    logged munged --key-file="$MUNGE_KEY" --socket="$MUNGE_SOCKET" \
        --pid-file="$(pid_file munged)" --log-file="$LOG_DIR/munged.log" \
        --seed-file="$STATE_DIR/munge-key/munge.seed" || return 1
    wait_for 10 munge_works
}
munge_works() { munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET"; }

start_mariadbd() {
    if [[ ! -d $MYSQL_DATA/mysql ]]; then
        rm -rf "$MYSQL_DATA"
        logged mariadb-install-db --no-defaults --datadir="$MYSQL_DATA" --user=root \
            --auth-root-authentication-method=socket --skip-test-db || return 1
    fi
    # Gotcha 4: mariadbd does not daemonize; unix socket only, no networking.
    setsid nohup mariadbd --no-defaults --datadir="$MYSQL_DATA" --socket="$MYSQL_SOCKET" \
        --pid-file="$(pid_file mariadbd)" --skip-networking --user=root \
        --log-error="$LOG_DIR/mariadbd.log" </dev/null >>"$LOG" 2>&1 9>&- &
    wait_for 30 mariadb_works
}
mariadb_works() {
    is_running mariadbd && mariadb --no-defaults --socket="$MYSQL_SOCKET" -u root -e 'SELECT 1'
}

start_slurmdbd() {
    MYSQL_UNIX_PORT=$MYSQL_SOCKET logged slurmdbd || return 1
    wait_for 30 timeout 10 sacctmgr -n show cluster
}

start_slurmctld() {
    logged slurmctld || return 1
    wait_for 30 timeout 10 sinfo -h
}

start_slurmd() {
    logged slurmd -N "$NODE" || return 1
    wait_for 30 node_usable || true
    if [[ $(node_state) =~ down|drain|fail ]]; then
        logged scontrol update nodename="$NODE" state=resume
    fi
    wait_for 30 node_usable
}

start_daemon() {
    local name=$1 t
    t=$EPOCHREALTIME
    if is_running "$name"; then
        say "$name already running (pid $(our_pid "$name"))"
        return 0
    fi
    rm -f "$(pid_file "$name")"
    "start_$name" || die "$name did not come up; its log: $LOG_DIR/$name.log"
    say "$name up (pid $(our_pid "$name"), $(since "$t") s)"
}

# ---------------------------------------------------------------- commands
cmd_up() {
    local t0 t d out
    require_root
    t0=$EPOCHREALTIME
    mkdir -p "$STATE_DIR"
    take_lock
    make_dirs
    if all_running; then
        write_config # a newer version of this script may bring a new config
        if ((!CONFIG_CHANGED)) && node_usable && sacct_answers; then
            link_system_conf
            say "already up ($(since "$t0") s); SLURM_CONF=$SLURM_CONF_FILE"
            return 0
        fi
    fi
    printf '\n=== up %s ===\n' "$(date -Is)" >>"$LOG"
    t=$EPOCHREALTIME
    ensure_packages
    say "packages ready ($(since "$t") s)"
    write_config
    if ((CONFIG_CHANGED)) && any_running; then
        say "configuration changed; restarting the daemons"
        stop_all
    fi
    check_ports_free
    link_system_conf
    for d in "${DAEMONS[@]}"; do start_daemon "$d"; done
    t=$EPOCHREALTIME
    wait_for 30 sacct_answers || die "sacct does not answer (slurmdbd log: $LOG_DIR/slurmdbd.log)"
    out=$(timeout 60 srun -N 1 -n 1 hostname 2>>"$LOG") || die "smoke test 'srun hostname' failed"
    say "smoke 'srun hostname' -> $out ($(since "$t") s)"
    say "up in $(since "$t0") s; node $NODE $(node_state); SLURM_CONF=$SLURM_CONF_FILE"
}

# cancel_jobs: so no slurmstepd or job process outlives slurmd.
cancel_jobs() {
    local jobs
    is_running slurmctld || return 0
    jobs=$(timeout 10 squeue -h -o %i 2>/dev/null) || return 0
    [[ -n $jobs ]] || return 0
    say "cancelling jobs: $(echo "$jobs" | tr '\n' ' ')"
    # shellcheck disable=SC2086 # one job id per word
    timeout 10 scancel $jobs >>"$LOG" 2>&1 || true
    wait_for 15 no_jobs || say "warning: jobs still listed after scancel"
}
no_jobs() { [[ -z $(squeue -h -o %i) ]]; }

stop_daemon() {
    local name=$1 pid
    if ! pid=$(our_pid "$name"); then
        rm -f "$(pid_file "$name")"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_for 30 eval "! is_running $name"; then
        if pid=$(our_pid "$name"); then kill -KILL "$pid" 2>/dev/null || true; fi
        wait_for 5 eval "! is_running $name" || die "$name (pid $pid) does not stop"
    fi
    rm -f "$(pid_file "$name")"
    say "$name stopped (pid $pid)"
}

stop_all() {
    local i
    cancel_jobs
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do stop_daemon "${DAEMONS[i]}"; done
}

cmd_down() {
    local t0
    require_root
    t0=$EPOCHREALTIME
    if [[ -d $STATE_DIR ]]; then
        take_lock
        mkdir -p "$LOG_DIR"
        printf '\n=== down %s ===\n' "$(date -Is)" >>"$LOG"
        stop_all
    fi
    if [[ $(readlink "$SYSTEM_CONF" 2>/dev/null) == "$SLURM_CONF_FILE" ]]; then
        rm -f "$SYSTEM_CONF"
    fi
    say "down ($(since "$t0") s); state kept in $STATE_DIR"
}

cmd_status() {
    local d pid rc=0
    for d in "${DAEMONS[@]}"; do
        if pid=$(our_pid "$d"); then
            printf '%-10s running (pid %s)\n' "$d" "$pid"
        else
            printf '%-10s stopped\n' "$d"
            rc=3
        fi
    done
    if is_running slurmctld; then
        timeout 10 sinfo || rc=3
    fi
    return "$rc"
}

cmd_env() {
    printf 'export SLURM_CONF=%q\n' "$SLURM_CONF_FILE"
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status || exit $? ;; # 3 when a daemon is stopped
env) cmd_env ;;
*)
    echo "usage: $0 {up|down|status|env}" >&2
    exit 2
    ;;
esac
