#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for the `slurm` tests and for trying cluster sweeps without a
# cluster (README.md, "Cluster sweeps on one machine"). Needs root and apt (Debian/Ubuntu); no systemd needed.
#
#   scripts/slurm/local_cluster.sh start    # install what is missing (apt), write the config, start the daemons
#   scripts/slurm/local_cluster.sh status   # which daemons run; sinfo
#   scripts/slurm/local_cluster.sh stop     # stop exactly the daemons this script started (their pid files)
#
# Daemons: munged, mariadbd (accounting database), slurmdbd, slurmctld, slurmd; one node `localhost` with the
# machine's CPUs and memory in partition `local`. State, config, logs and pid files live in $RADAM_SLURM_DIR
# (default /var/tmp/radam-slurm); the only file outside it is the config SLURM's commands read,
# /etc/slurm/slurm.conf (a link into that directory; an existing real file is refused). `start` is idempotent.
# A requeued job may start again after AuthInfo cred_expire + 1 s; cred_expire=10 and sched_interval=10 make
# that ~12 s instead of ~2 min.
set -euo pipefail

DIR=${RADAM_SLURM_DIR:-/var/tmp/radam-slurm}
ETC=/etc/slurm
PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)   # start order; stop is the reverse

die() { echo "local_cluster: $*" >&2; exit 1; }
pidfile() { echo "$DIR/run/$1.pid"; }
running() { local f; f=$(pidfile "$1"); [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }

wait_for() {  # wait_for SECONDS WHAT COMMAND...: poll until the command succeeds
  local limit=$1 what=$2; shift 2
  for _ in $(seq $((limit * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  die "$what did not come up within ${limit}s (logs: $DIR/log/)"
}

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "apt-get not found; install ${missing[*]} by hand"
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d 101: the packages' own service start (refused on this kind of machine anyway) is skipped; we
  # start the daemons ourselves. An existing policy-rc.d is left as it is.
  local policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d; printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"
  fi
  if ! { apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
         { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; }; then
    [ -z "$policy" ] || rm -f "$policy"
    die "apt-get install ${missing[*]} failed"
  fi
  [ -z "$policy" ] || rm -f "$policy"
}

write_config() {
  mkdir -p "$DIR"/{run,log,spool/ctld,spool/d,mysql,etc}
  chown root:root "$DIR" "$DIR/log"; chmod 755 "$DIR" "$DIR/log"
  install -d -o munge -g munge -m 0700 "$DIR/log/munge"   # munged refuses a log directory it does not own
  local cpus mem_mb
  cpus=$(nproc --all)
  mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))  # 10% left to the system
  cat >"$DIR/etc/slurm.conf" <<EOF
# Written by scripts/slurm/local_cluster.sh: one node, this machine.
ClusterName=radam
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
CredType=cred/munge
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$(pidfile slurmctld)
SlurmdPidFile=$(pidfile slurmd)
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=10
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
MinJobAge=300
KillWait=10
NodeName=localhost CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$(pidfile slurmdbd)
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageUser=root
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$DIR/etc/slurmdbd.conf"
  mkdir -p "$ETC"
  local f
  for f in slurm.conf slurmdbd.conf; do
    if [ -e "$ETC/$f" ] && [ ! -L "$ETC/$f" ]; then
      cmp -s "$ETC/$f" "$DIR/etc/$f" || die "$ETC/$f exists and is not ours; move it away first"
    fi
    ln -sfn "$DIR/etc/$f" "$ETC/$f"
  done
}

start_munged() {
  install -d -o munge -g munge -m 0755 /run/munge
  [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
                                   chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
  running munged && return 0
  # munged runs as user munge: its pid file goes to /run/munge, linked from our run directory
  runuser -u munge -- munged --pid-file=/run/munge/radam-munged.pid --log-file="$DIR/log/munge/munged.log" ||
    die "munged failed to start (see $DIR/log/munge/munged.log)"
  wait_for 10 munged test -s /run/munge/radam-munged.pid
  cp /run/munge/radam-munged.pid "$(pidfile munged)"
  wait_for 10 munged munge -n
}

start_mariadbd() {
  running mariadbd && return 0
  if [ ! -d "$DIR/mysql/mysql" ]; then
    mariadb-install-db --user=mysql --datadir="$DIR/mysql" --auth-root-authentication-method=socket \
      >"$DIR/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed (see $DIR/log/mariadb-install.log)"
  fi
  chown -R mysql:mysql "$DIR/mysql"
  install -d -o mysql -g mysql /run/mysqld "$DIR/log/mysql"   # mariadbd runs as mysql: its pid file and log
  rm -f /run/mysqld/radam-mariadbd.pid
  (setsid mariadbd --user=mysql --datadir="$DIR/mysql" --pid-file=/run/mysqld/radam-mariadbd.pid \
     --socket=/run/mysqld/mysqld.sock --bind-address=127.0.0.1 --port=3306 --skip-name-resolve \
     --innodb-buffer-pool-size=32M --log-error="$DIR/log/mysql/mariadb.log" </dev/null >/dev/null 2>&1 &)
  wait_for 30 mariadbd test -s /run/mysqld/radam-mariadbd.pid
  cp /run/mysqld/radam-mariadbd.pid "$(pidfile mariadbd)"
  wait_for 30 mariadbd mariadb -u root -e "select 1"
}

start_slurm_daemon() {  # slurmdbd / slurmctld / slurmd: each writes its pid file (named in the configs)
  local name=$1; shift
  running "$name" && return 0
  rm -f "$(pidfile "$name")"
  "$name" "$@" || die "$name failed to start (see $DIR/log/$name.log)"
  wait_for 20 "$name" test -s "$(pidfile "$name")"
}

add_account() {  # submitit reads job states from sacct: the cluster and root's account must be known
  sacctmgr -i list cluster -n format=cluster 2>/dev/null | grep -qw radam ||
    sacctmgr -i add cluster radam >/dev/null
  sacctmgr -i -n list user root 2>/dev/null | grep -qw root ||
    sacctmgr -i add user root account=root cluster=radam >/dev/null 2>&1 || true
}

start() {
  [ "$(id -u)" = 0 ] || die "needs root (installs packages and starts system daemons)"
  local t0=$SECONDS
  install_packages
  write_config
  start_munged
  start_mariadbd
  mariadb -u root -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db" || die "cannot create the accounting database"
  start_slurm_daemon slurmdbd
  wait_for 20 slurmdbd sacctmgr -i -n list cluster
  add_account
  start_slurm_daemon slurmctld -L "$DIR/log/slurmctld.log"
  wait_for 20 slurmctld scontrol ping
  start_slurm_daemon slurmd
  wait_for 30 "the node" sh -c "sinfo -h -N -o %T | grep -Eq '^(idle|mixed|allocated)'"
  scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
  echo "local_cluster: up in $((SECONDS - t0)) s: partition local, $(sinfo -h -o '%c CPUs, %m MB' -p local)"
}

stop() {
  local i name f pid
  for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
    name=${DAEMONS[i]}; f=$(pidfile "$name")
    [ -s "$f" ] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
      echo "local_cluster: stopped $name (pid $pid)"
    fi
    rm -f "$f"
  done
}

status() {
  local name up=0
  for name in "${DAEMONS[@]}"; do
    if running "$name"; then echo "$name: running (pid $(cat "$(pidfile "$name")"))"; up=$((up + 1))
    else echo "$name: stopped"; fi
  done
  [ "$up" = ${#DAEMONS[@]} ] && sinfo
  [ "$up" = ${#DAEMONS[@]} ]
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status   (state in \$RADAM_SLURM_DIR, default /var/tmp/radam-slurm)" >&2; exit 2 ;;
esac
