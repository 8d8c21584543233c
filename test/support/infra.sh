#!/usr/bin/env bash
# test/support/infra.sh — real servers on 127.0.0.1 for the tests (Debian 12, run as root):
#   etcd 3.4 (23790/23800), ZooKeeper 3.8 (21810), Redis 7.0 standalone (16379) and a 3-master Redis
#   cluster (17001-17003, bus 27001-27003), PostgreSQL 15 (15432, trust auth), MariaDB 10.11 (13306).
# Caddy is installed but NOT started here: tests start their own (test/support/caddy.ts).
#
#   infra.sh up            install missing Debian packages, start what is not running, wait (bounded)
#                          until everything is ready, write $BASE/env (source it). Idempotent: a second
#                          `up` only checks readiness.
#   infra.sh down          stop everything; data is kept in $BASE/data (Redis saves its dataset on
#                          the way down: SHUTDOWN SAVE)
#   infra.sh status        one line per server; exit 0 only if all are ready
#   infra.sh stop NAME     stop ONE server and wait until it is really down
#   infra.sh start NAME    start ONE server in place (same port, same data dir) and wait until it is ready
#                          NAME: etcd zookeeper redis redis-cluster postgres mariadb
#   infra.sh clean         down, then remove $BASE (next `up` starts from empty data dirs)
#
# Settings (environment): INFRA_DIR (base dir, default /tmp/cdr-infra; must be traversable by the
# users postgres and mysql, so not under /root), INFRA_ETCD_PORT, INFRA_ETCD_PEER_PORT, INFRA_ZK_PORT,
# INFRA_REDIS_PORT, INFRA_REDIS_CLUSTER_PORT (first of 3 consecutive ports), INFRA_PG_PORT,
# INFRA_MYSQL_PORT. For every command but `up`, ports not set in the environment are taken from
# $BASE/env (the last `up`). To move a running server to another port: `down` first.
set -euo pipefail

CMD=${1:-up}
NAME=${2:-}
SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
BASE=${INFRA_DIR:-/tmp/cdr-infra}
case $BASE in /*) ;; *) BASE=$PWD/$BASE ;; esac
BASE=${BASE%/}
if [ -z "$BASE" ] || [ "$BASE" = / ]; then echo "infra.sh: refusing INFRA_DIR='$BASE'" >&2; exit 2; fi

if [ "$CMD" != up ] && [ -r "$BASE/env" ]; then
  while IFS= read -r line; do
    if [[ $line =~ ^export\ (INFRA_[A-Z_]+_PORT)=([0-9]+)$ ]]; then
      var=${BASH_REMATCH[1]}
      [ -n "${!var:-}" ] || printf -v "$var" '%s' "${BASH_REMATCH[2]}"
    fi
  done <"$BASE/env"
fi
INFRA_ETCD_PORT=${INFRA_ETCD_PORT:-23790}
INFRA_ETCD_PEER_PORT=${INFRA_ETCD_PEER_PORT:-23800}
INFRA_ZK_PORT=${INFRA_ZK_PORT:-21810}
INFRA_REDIS_PORT=${INFRA_REDIS_PORT:-16379}
INFRA_REDIS_CLUSTER_PORT=${INFRA_REDIS_CLUSTER_PORT:-17001}
INFRA_PG_PORT=${INFRA_PG_PORT:-15432}
INFRA_MYSQL_PORT=${INFRA_MYSQL_PORT:-13306}
CLUSTER_PORTS=("$INFRA_REDIS_CLUSTER_PORT" "$((INFRA_REDIS_CLUSTER_PORT + 1))" "$((INFRA_REDIS_CLUSTER_PORT + 2))")

D=$BASE/data
L=$BASE/logs
R=$BASE/run
MARKER=$BASE/.cdr-infra
if [ -z "${PGBIN:-}" ]; then
  PGBIN=/usr/lib/postgresql/15/bin
  if [ ! -x "$PGBIN/postgres" ]; then
    for d in /usr/lib/postgresql/*/bin; do [ -x "$d/postgres" ] && PGBIN=$d; done
  fi
fi
ZK_CP="$BASE/zk-conf:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar"
SERVERS=(etcd zookeeper redis redis-cluster postgres mariadb)
export ETCDCTL_API=3

die() { echo "infra.sh: $*" >&2; exit 1; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$SELF" >&2; exit 2; }

# ---------------------------------------------------------------------------------------------- helpers
T0=${EPOCHREALTIME/./}
elapsed() { local us=$((${EPOCHREALTIME/./} - T0)); printf '%d.%02ds' $((us / 1000000)) $((us % 1000000 / 10000)); }
lap() { printf '  %-14s %s\n' "$1" "$(elapsed)"; }

# a pid runs if it exists and is not a zombie (orphans are reaped by PID 1 only after a delay)
running() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $st != Z* ]]; }
# start time of a pid in clock ticks since boot (/proc/PID/stat field 22); survives exec
starttime() {
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  s=${s##*) }
  # shellcheck disable=SC2086
  set -- $s
  echo "${20}"
}
# a pid file (pid, start time) is alive if that very process still runs: after a reboot or when the
# machine was handed over with killed servers, the pid may belong to another process now
alive() {
  local pid st
  [ -s "$1" ] || return 1
  { read -r pid && read -r st; } <"$1" || true
  running "$pid" || return 1
  [ -z "${st:-}" ] || [ "$(starttime "$pid")" = "$st" ]
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# launch PIDFILE LOG CMD...: start CMD in its own session (so that a Ctrl-C or a killed process group of
# the caller does not reach it), detached from our stdio and from the lock fd 9; PIDFILE gets its pid.
launch() {
  local pidf=$1 log=$2 i=0 pid
  shift 2
  rm -f "$pidf"
  # shellcheck disable=SC2016
  setsid -f bash -c 'echo $$ >"$0.tmp" && mv -f "$0.tmp" "$0" && exec "$@"' "$pidf" "$@" \
    >>"$log" 2>&1 </dev/null 9>&-
  until [ -s "$pidf" ]; do
    i=$((i + 1))
    [ "$i" -lt 500 ] || die "could not launch $1 (no pid after 10s)"
    sleep 0.02
  done
  pid=$(head -n1 "$pidf")
  printf '%s\n%s\n' "$pid" "$(starttime "$pid" || true)" >"$pidf.tmp" && mv -f "$pidf.tmp" "$pidf"
}

# wait_for NAME SECONDS PIDFILE|- CMD...: poll CMD until it succeeds; fail after SECONDS, or at once if
# the process in PIDFILE died; on failure show the end of the server's log.
wait_for() {
  local n=$1 t=$2 pidf=$3 deadline
  shift 3
  deadline=$((${EPOCHREALTIME/./} + t * 1000000))
  until "$@" >/dev/null 2>&1; do
    if [ "$pidf" != - ] && ! alive "$pidf"; then
      echo "infra.sh: $n exited during startup; end of $L/$n.log:" >&2
      tail -n 30 "$L/$n.log" >&2 2>/dev/null || true
      return 1
    fi
    if [ "${EPOCHREALTIME/./}" -ge "$deadline" ]; then
      echo "infra.sh: $n not ready after ${t}s; end of $L/$n.log:" >&2
      tail -n 30 "$L/$n.log" >&2 2>/dev/null || true
      return 1
    fi
    sleep 0.1
  done
}

# wait_closed NAME SECONDS PORT...: until nothing accepts connections on these ports
wait_closed() {
  local n=$1 t=$2 p deadline
  shift 2
  deadline=$((${EPOCHREALTIME/./} + t * 1000000))
  for p in "$@"; do
    while port_open "$p"; do
      [ "${EPOCHREALTIME/./}" -lt "$deadline" ] || die "$n: port $p still open after ${t}s"
      sleep 0.1
    done
  done
}

# stop_pid PIDFILE SECONDS: SIGTERM, wait up to SECONDS, then SIGKILL
stop_pid() {
  local f=$1 t=$2 p deadline
  if alive "$f"; then
    p=$(head -n1 "$f")
    kill "$p" 2>/dev/null || true
    deadline=$((${EPOCHREALTIME/./} + t * 1000000))
    while running "$p" && [ "${EPOCHREALTIME/./}" -lt "$deadline" ]; do sleep 0.1; done
    if running "$p"; then
      echo "infra.sh: pid $p ($f) ignored SIGTERM for ${t}s, sending SIGKILL" >&2
      kill -9 "$p" 2>/dev/null || true
      deadline=$((${EPOCHREALTIME/./} + 5000000))
      while running "$p" && [ "${EPOCHREALTIME/./}" -lt "$deadline" ]; do sleep 0.1; done
    fi
  fi
  rm -f "$f"
}

# ports_free NAME PORT...: fail clearly when a port is taken by something we did not start
ports_free() {
  local n=$1 p
  shift
  for p in "$@"; do
    if port_open "$p"; then
      die "$n: port $p is already in use by a process not started from $BASE (another INFRA_DIR? see: ss -ltnp 'sport = :$p')"
    fi
  done
}

# ------------------------------------------------------------------------------------------- packages
ensure_packages() {
  local need=()
  { command -v etcd && command -v etcdctl; } >/dev/null || need+=(etcd-server etcd-client)
  [ -f /usr/share/java/zookeeper.jar ] || need+=(zookeeper)
  command -v java >/dev/null || need+=(default-jre-headless)
  { command -v redis-server && command -v redis-cli; } >/dev/null || need+=(redis-server redis-tools)
  { [ -x /usr/sbin/mariadbd ] && command -v mariadb-install-db; } >/dev/null || need+=(mariadb-server)
  { command -v mariadb && command -v mariadb-admin; } >/dev/null || need+=(mariadb-client)
  command -v caddy >/dev/null || need+=(caddy)
  command -v docker-compose >/dev/null || need+=(docker-compose)   # test/deploy/compose.test.ts: `config -q` (v1, no engine needed)
  command -v bc >/dev/null || need+=(bc)
  command -v chromium >/dev/null || need+=(chromium)                # headless page tests (admin status page)
  command -v promtool >/dev/null || need+=(prometheus)              # promtool check/test rules, PromQL parsing
  command -v kubectl >/dev/null || need+=(kubernetes-client)        # kubectl kustomize (deploy/kubernetes)
  command -v ps >/dev/null || need+=(procps)
  [ -x "$PGBIN/postgres" ] || need+=(postgresql)
  [ ${#need[@]} -gt 0 ] || return 0

  [ "$(id -u)" = 0 ] || die "missing packages (${need[*]}) and not root: apt-get install them first"
  echo "infra.sh: installing ${need[*]}"
  # policy-rc.d exiting 101 keeps the postinst scripts from starting the system services on their
  # default ports; use the machine's own one if it has one, else put ours there for the install only.
  local made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  local rc=0
  {
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get -o DPkg::Lock::Timeout=120 update -qq ||
      { sleep 3; timeout 300 apt-get -o DPkg::Lock::Timeout=120 update -qq; }
    timeout 900 apt-get -o DPkg::Lock::Timeout=120 -o Dpkg::Options::=--force-confdef \
      -o Dpkg::Options::=--force-confold install -y -q --no-install-recommends "${need[@]}"
  } >"$L/apt.log" 2>&1 </dev/null || rc=$?
  [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
  if [ "$rc" != 0 ]; then
    tail -n 40 "$L/apt.log" >&2
    die "apt-get failed (rc $rc); full log: $L/apt.log"
  fi
  [ -x "$PGBIN/postgres" ] || for d in /usr/lib/postgresql/*/bin; do [ -x "$d/postgres" ] && PGBIN=$d; done
  lap apt
}

# --------------------------------------------------------------------------------------------- etcd
start_etcd() {
  alive "$R/etcd.pid" && return 0
  ports_free etcd "$INFRA_ETCD_PORT" "$INFRA_ETCD_PEER_PORT"
  # etcd creates its data dir itself with mode 0700 (it warns about a pre-made 0755 one)
  launch "$R/etcd.pid" "$L/etcd.log" etcd --name infra --data-dir "$D/etcd" \
    --listen-client-urls "http://127.0.0.1:$INFRA_ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$INFRA_ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$INFRA_ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$INFRA_ETCD_PEER_PORT" \
    --initial-cluster "infra=http://127.0.0.1:$INFRA_ETCD_PEER_PORT" \
    --listen-metrics-urls '' --logger zap --log-level warn
}
ready_etcd() {
  etcdctl --endpoints="127.0.0.1:$INFRA_ETCD_PORT" --dial-timeout=1s --command-timeout=2s endpoint health
}
wait_etcd() { wait_for etcd 30 "$R/etcd.pid" ready_etcd; }
stop_etcd() {
  stop_pid "$R/etcd.pid" 15
  wait_closed etcd 10 "$INFRA_ETCD_PORT" "$INFRA_ETCD_PEER_PORT"
}

# ---------------------------------------------------------------------------------------- zookeeper
# The JVM is run directly: Debian's zkServer.sh forces /etc/zookeeper/conf and /var/log/zookeeper.
start_zookeeper() {
  alive "$R/zookeeper.pid" && return 0
  ports_free zookeeper "$INFRA_ZK_PORT"
  mkdir -p "$D/zookeeper" "$BASE/zk-conf"
  printf '%s\n' tickTime=2000 initLimit=10 syncLimit=5 "dataDir=$D/zookeeper" "clientPort=$INFRA_ZK_PORT" \
    clientPortAddress=127.0.0.1 admin.enableServer=false '4lw.commands.whitelist=ruok,srvr,stat,mntr,conf' \
    maxClientCnxns=0 >"$BASE/zk-conf/zoo.cfg"
  printf '%s\n' 'log4j.rootLogger=WARN, C' 'log4j.appender.C=org.apache.log4j.ConsoleAppender' \
    'log4j.appender.C.layout=org.apache.log4j.PatternLayout' \
    'log4j.appender.C.layout.ConversionPattern=%d %-5p [%t] %c{1} - %m%n' >"$BASE/zk-conf/log4j.properties"
  launch "$R/zookeeper.pid" "$L/zookeeper.log" java -Xmx256m -XX:+UseSerialGC -cp "$ZK_CP" \
    org.apache.zookeeper.server.quorum.QuorumPeerMain "$BASE/zk-conf/zoo.cfg"
}
# `ruok` answers imok before ZooKeeper serves; `srvr` says "Mode: standalone" only once it does
ready_zookeeper() {
  local out
  # shellcheck disable=SC2016
  out=$(timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" && printf srvr >&3 && cat <&3' "$INFRA_ZK_PORT" 2>/dev/null) ||
    return 1
  [[ $out == *"Mode: standalone"* ]]
}
wait_zookeeper() { wait_for zookeeper 60 "$R/zookeeper.pid" ready_zookeeper; }
stop_zookeeper() {
  stop_pid "$R/zookeeper.pid" 20 # the JVM needs >1 s after SIGTERM
  wait_closed zookeeper 10 "$INFRA_ZK_PORT"
}

# ------------------------------------------------------------------------------------ redis (standalone)
# Persistence is off while running; `stop`/`down` use SHUTDOWN SAVE so that the data survives a restart.
redis_ping() { [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]; }
start_redis() {
  alive "$R/redis.pid" && return 0
  ports_free redis "$INFRA_REDIS_PORT"
  mkdir -p "$D/redis"
  launch "$R/redis.pid" "$L/redis.log" redis-server --port "$INFRA_REDIS_PORT" --bind 127.0.0.1 \
    --dir "$D/redis" --save '' --appendonly no --notify-keyspace-events KEA --daemonize no
}
ready_redis() { redis_ping "$INFRA_REDIS_PORT"; }
wait_redis() { wait_for redis 15 "$R/redis.pid" ready_redis; }
redis_shutdown() { # PIDFILE PORT
  if alive "$1"; then
    timeout 10 redis-cli -h 127.0.0.1 -p "$2" shutdown save >/dev/null 2>&1 || true
    stop_pid "$1" 10
  fi
  rm -f "$1"
  wait_closed redis 10 "$2"
}
stop_redis() { redis_shutdown "$R/redis.pid" "$INFRA_REDIS_PORT"; }

# --------------------------------------------------------------------------------------- redis cluster
cluster_field() { # PORT FIELD
  redis-cli -h 127.0.0.1 -p "$1" cluster info 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"
}
start_redis_cluster() {
  local i p
  for i in 0 1 2; do
    p=${CLUSTER_PORTS[$i]}
    alive "$R/redis-cluster-$((i + 1)).pid" && continue
    ports_free redis-cluster "$p" "$((p + 10000))"
    mkdir -p "$D/redis-cluster/$p"
    launch "$R/redis-cluster-$((i + 1)).pid" "$L/redis-cluster.log" redis-server --port "$p" --bind 127.0.0.1 \
      --dir "$D/redis-cluster/$p" --cluster-enabled yes --cluster-config-file nodes.conf \
      --cluster-node-timeout 3000 --save '' --appendonly no --notify-keyspace-events KEA --daemonize no
  done
}
cluster_pings() { local p; for p in "${CLUSTER_PORTS[@]}"; do redis_ping "$p" || return 1; done; }
cluster_ok() { local p; for p in "${CLUSTER_PORTS[@]}"; do [ "$(cluster_field "$p" cluster_state)" = ok ] || return 1; done; }
cluster_nodes_alive() { local i; for i in 1 2 3; do alive "$R/redis-cluster-$i.pid" || return 1; done; }
wait_redis_cluster() {
  local p i assigned=0 a
  for i in 1 2 3; do wait_for redis-cluster 15 "$R/redis-cluster-$i.pid" redis_ping "${CLUSTER_PORTS[$((i - 1))]}"; done
  cluster_ok && return 0
  for p in "${CLUSTER_PORTS[@]}"; do
    a=$(cluster_field "$p" cluster_slots_assigned)
    [ "${a:-0}" = 0 ] || assigned=1
  done
  if [ "$assigned" = 0 ]; then
    # fresh nodes (or a creation that failed half-way): make them empty and create the cluster
    for p in "${CLUSTER_PORTS[@]}"; do
      redis-cli -h 127.0.0.1 -p "$p" flushall >/dev/null
      redis-cli -h 127.0.0.1 -p "$p" cluster reset hard >/dev/null
    done
    timeout 60 redis-cli --cluster create "${CLUSTER_PORTS[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes \
      >>"$L/redis-cluster.log" 2>&1 </dev/null || {
      tail -n 30 "$L/redis-cluster.log" >&2
      die "redis-cli --cluster create failed"
    }
  fi
  # restarted nodes (slots already assigned in nodes.conf) converge by themselves
  wait_for redis-cluster 30 - cluster_ok || {
    for p in "${CLUSTER_PORTS[@]}"; do echo "--- cluster info $p:" >&2; redis-cli -p "$p" cluster info >&2 || true; done
    die "redis cluster never reached cluster_state:ok (to start over: infra.sh stop redis-cluster; rm -rf $D/redis-cluster)"
  }
}
ready_redis_cluster() { cluster_nodes_alive && cluster_ok; }
stop_redis_cluster() {
  local i
  for i in 1 2 3; do redis_shutdown "$R/redis-cluster-$i.pid" "${CLUSTER_PORTS[$((i - 1))]}"; done
}

# ------------------------------------------------------------------------------------------ postgres
# Private cluster, trust auth. initdb/postgres refuse root: run as user postgres, which needs to own
# the data dir, the socket dir and the log, and to traverse every parent dir.
pg() { runuser -u postgres -- "$PGBIN/$1" "${@:2}"; }
pg_alive() { [ -f "$D/pg/postmaster.pid" ] && pg pg_ctl -D "$D/pg" status >/dev/null 2>&1; }
start_postgres() {
  pg_alive && return 0
  ports_free postgres "$INFRA_PG_PORT"
  mkdir -p "$D/pg" "$R/pgsock"
  chown postgres:postgres "$D/pg" "$R/pgsock"
  chmod 700 "$D/pg"
  touch "$L/postgres.log"
  chown postgres "$L/postgres.log"
  if [ ! -f "$D/pg.initialized" ]; then
    find "$D/pg" -mindepth 1 -delete # a half-done initdb
    pg initdb -D "$D/pg" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$L/initdb.log" 2>&1 ||
      { tail -n 30 "$L/initdb.log" >&2; die "initdb failed"; }
    touch "$D/pg.initialized"
  fi
  pg pg_ctl -D "$D/pg" -l "$L/postgres.log" -W start -o "-p $INFRA_PG_PORT -k $R/pgsock \
    -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off -c synchronous_commit=off \
    -c full_page_writes=off" >/dev/null </dev/null 9>&-
}
ready_postgres() { "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$INFRA_PG_PORT" -t 1; }
wait_postgres() { wait_for postgres 30 - ready_postgres; }
stop_postgres() {
  if [ -f "$D/pg/postmaster.pid" ]; then
    pg pg_ctl -D "$D/pg" -m fast -w -t 30 stop >/dev/null 2>&1 || true
  fi
  wait_closed postgres 10 "$INFRA_PG_PORT"
}

# ------------------------------------------------------------------------------------------- mariadb
# Private instance. Socket and pid in a mysql-owned dir. root@127.0.0.1 has an empty password.
start_mariadb() {
  alive "$R/mariadb.pid" && return 0
  ports_free mariadb "$INFRA_MYSQL_PORT"
  mkdir -p "$D/mariadb" "$R/mariadb"
  chown mysql:mysql "$D/mariadb" "$R/mariadb"
  touch "$L/mariadb.log"
  chown mysql "$L/mariadb.log"
  if [ ! -f "$D/mariadb.initialized" ]; then
    find "$D/mariadb" -mindepth 1 -delete # a half-done install-db
    mariadb-install-db --no-defaults --datadir="$D/mariadb" --user=mysql \
      --auth-root-authentication-method=normal --skip-test-db >"$L/mariadb-install.log" 2>&1 </dev/null ||
      { tail -n 30 "$L/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
    touch "$D/mariadb.initialized"
  fi
  launch "$R/mariadb.pid" "$L/mariadb.out" /usr/sbin/mariadbd --no-defaults --datadir="$D/mariadb" --user=mysql \
    --port="$INFRA_MYSQL_PORT" --bind-address=127.0.0.1 --socket="$R/mariadb/mysqld.sock" \
    --pid-file="$R/mariadb/mysqld.pid" --log-error="$L/mariadb.log" --skip-log-bin --skip-name-resolve \
    --max-connections=300 --innodb-buffer-pool-size=64M --innodb-flush-log-at-trx-commit=0
}
mysql_root() { mariadb --no-defaults --connect-timeout=2 -uroot -h127.0.0.1 -P"$INFRA_MYSQL_PORT" "$@"; }
ready_mariadb() { mariadb-admin --no-defaults --connect-timeout=1 -uroot -h127.0.0.1 -P"$INFRA_MYSQL_PORT" ping; }
wait_mariadb() {
  wait_for mariadb 30 "$R/mariadb.pid" ready_mariadb
  mysql_root -e "CREATE DATABASE IF NOT EXISTS app; CREATE USER IF NOT EXISTS 'app'@'%' IDENTIFIED BY 'app';
    GRANT ALL ON app.* TO 'app'@'%';" </dev/null
}
stop_mariadb() {
  stop_pid "$R/mariadb.pid" 30
  wait_closed mariadb 10 "$INFRA_MYSQL_PORT"
}

# --------------------------------------------------------------------------------------------- status
pid_of() {
  case $1 in
    postgres) if [ -f "$D/pg/postmaster.pid" ]; then head -n1 "$D/pg/postmaster.pid"; fi ;;
    redis-cluster) local i; for i in 1 2 3; do [ -s "$R/redis-cluster-$i.pid" ] && printf '%s ' "$(head -n1 "$R/redis-cluster-$i.pid")"; done; true ;;
    *) if [ -s "$R/$1.pid" ]; then head -n1 "$R/$1.pid"; fi ;;
  esac
}
ports_of() {
  case $1 in
    etcd) echo "$INFRA_ETCD_PORT,$INFRA_ETCD_PEER_PORT" ;;
    zookeeper) echo "$INFRA_ZK_PORT" ;;
    redis) echo "$INFRA_REDIS_PORT" ;;
    redis-cluster) echo "${CLUSTER_PORTS[0]}-${CLUSTER_PORTS[2]}" ;;
    postgres) echo "$INFRA_PG_PORT" ;;
    mariadb) echo "$INFRA_MYSQL_PORT" ;;
  esac
}
fn() { echo "${1}_${2//-/_}"; } # fn start redis-cluster -> start_redis_cluster

# q VALUE: shell-quote for the env file, readable (single quotes only when needed)
q() {
  if [[ $1 =~ ^[A-Za-z0-9_./:@,+=%-]*$ ]]; then printf '%s' "$1"; else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
kv() { while [ $# -ge 2 ]; do printf 'export %s=%s\n' "$1" "$(q "$2")"; shift 2; done; }

write_env() {
  local tmp=$BASE/env.tmp s u
  {
    echo "# written by $SELF up — source it"
    kv \
      INFRA_DIR "$BASE" \
      INFRA_SCRIPT "$SELF" \
      ETCD_ENDPOINTS "127.0.0.1:$INFRA_ETCD_PORT" \
      ZK_CONNECT "127.0.0.1:$INFRA_ZK_PORT" \
      REDIS_URL "redis://127.0.0.1:$INFRA_REDIS_PORT" \
      REDIS_CLUSTER_NODES "$(IFS=,; echo "${CLUSTER_PORTS[*]/#/127.0.0.1:}")" \
      PG_URL "postgres://postgres@127.0.0.1:$INFRA_PG_PORT/postgres" \
      MYSQL_URL "mysql://app:app@127.0.0.1:$INFRA_MYSQL_PORT/app" \
      MYSQL_ROOT_URL "mysql://root@127.0.0.1:$INFRA_MYSQL_PORT/app" \
      CADDY_BIN "$(command -v caddy)" \
      INFRA_ETCD_PORT "$INFRA_ETCD_PORT" \
      INFRA_ETCD_PEER_PORT "$INFRA_ETCD_PEER_PORT" \
      INFRA_ZK_PORT "$INFRA_ZK_PORT" \
      INFRA_REDIS_PORT "$INFRA_REDIS_PORT" \
      INFRA_REDIS_CLUSTER_PORT "$INFRA_REDIS_CLUSTER_PORT" \
      INFRA_PG_PORT "$INFRA_PG_PORT" \
      INFRA_MYSQL_PORT "$INFRA_MYSQL_PORT" \
      INFRA_ETCD_PIDFILE "$R/etcd.pid" \
      INFRA_ZOOKEEPER_PIDFILE "$R/zookeeper.pid" \
      INFRA_REDIS_PIDFILE "$R/redis.pid" \
      INFRA_REDIS_CLUSTER_PIDFILES "$R/redis-cluster-1.pid $R/redis-cluster-2.pid $R/redis-cluster-3.pid" \
      INFRA_POSTGRES_PIDFILE "$D/pg/postmaster.pid" \
      INFRA_MARIADB_PIDFILE "$R/mariadb.pid"
    for s in "${SERVERS[@]}"; do
      u=${s^^}
      u=${u//-/_}
      kv "INFRA_STOP_$u" "bash $(printf %q "$SELF") stop $s" "INFRA_START_$u" "bash $(printf %q "$SELF") start $s"
    done
  } >"$tmp"
  mv -f "$tmp" "$BASE/env"
}

# --------------------------------------------------------------------------------------------- main
prepare_base() {
  if [ -d "$BASE" ] && [ ! -f "$MARKER" ] && [ -n "$(ls -A "$BASE" 2>/dev/null)" ]; then
    die "$BASE exists, is not empty and was not made by infra.sh: choose another INFRA_DIR"
  fi
  mkdir -p "$BASE" "$D" "$L" "$R"
  chmod 755 "$BASE" "$D" "$L" "$R" # users postgres and mysql must traverse them
  touch "$MARKER"
}
lock() {
  exec 9>"$BASE/.lock"
  flock -w 300 9 || die "another infra.sh holds $BASE/.lock for 300s"
}
check_name() {
  local s
  for s in "${SERVERS[@]}"; do [ "$s" = "$NAME" ] && return 0; done
  echo "infra.sh: unknown server '$NAME' (one of: ${SERVERS[*]})" >&2
  exit 2
}

case $CMD in
  up)
    case $BASE in /root | /root/*) die "INFRA_DIR=$BASE: users postgres/mysql cannot traverse /root" ;; esac
    prepare_base
    lock
    ensure_packages
    for s in etcd zookeeper redis redis-cluster; do "$(fn start "$s")"; done
    # on a first run initdb, mariadb-install-db and the cluster creation (mostly waiting) take 1-3 s
    # each: do them side by side
    start_postgres &
    pg_job=$!
    start_mariadb &
    my_job=$!
    { wait_redis_cluster && lap redis-cluster; } &
    rc_job=$!
    wait "$pg_job" || die "postgres failed to start"
    wait "$my_job" || die "mariadb failed to start"
    for s in redis postgres etcd mariadb zookeeper; do "$(fn wait "$s")"; lap "$s"; done
    wait "$rc_job" || die "redis cluster failed to start"
    write_env
    echo "infra up in $(elapsed); env: source $BASE/env"
    ;;
  down)
    [ -d "$BASE" ] || { echo "infra.sh: nothing at $BASE"; exit 0; }
    lock
    for s in mariadb postgres redis-cluster redis zookeeper etcd; do "$(fn stop "$s")"; done
    echo "infra down in $(elapsed) (data kept in $D; \`infra.sh clean\` removes it)"
    ;;
  stop | start)
    [ -n "$NAME" ] || usage
    check_name
    [ -f "$MARKER" ] || die "no infra at $BASE: run \`infra.sh up\` first"
    lock
    "$(fn "$CMD" "$NAME")"
    if [ "$CMD" = start ]; then "$(fn wait "$NAME")"; fi
    echo "$NAME: ${CMD/%p/pp}ed in $(elapsed)"
    ;;
  status)
    all=0
    for s in "${SERVERS[@]}"; do
      if "$(fn ready "$s")" >/dev/null 2>&1; then st=ready; else st=DOWN; all=1; fi
      printf '%-14s %-6s port %-12s pid %s\n' "$s" "$st" "$(ports_of "$s")" "$(pid_of "$s")"
    done
    exit "$all"
    ;;
  clean)
    if [ -d "$BASE" ]; then
      [ -f "$MARKER" ] || die "$BASE was not made by infra.sh: not removing it"
      INFRA_DIR=$BASE bash "$SELF" down
      rm -rf "$BASE"
      echo "removed $BASE"
    fi
    ;;
  -h | --help | help) usage ;;
  *) usage ;;
esac
