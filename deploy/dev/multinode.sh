#!/usr/bin/env bash
# The distributed mode on one machine: two api-servers and three sync-workers against the
# local PostgreSQL and RabbitMQ, for trying the fleet out and for tests. Everything listens
# on 127.0.0.1 only.
#
#   deploy/dev/multinode.sh start    # build if needed, start what is not running, print URLs and token
#   deploy/dev/multinode.sh status   # each process: pid and probe (exit 1 unless all are ready)
#   deploy/dev/multinode.sh stop     # SIGTERM: workers first (they hand their jobs back), then servers
#
#   api-server 1   REST 127.0.0.1:8080  gRPC 127.0.0.1:8081
#   api-server 2   REST 127.0.0.1:8090  gRPC 127.0.0.1:8091
#   sync-worker 1  health 127.0.0.1:9101, talks to api-server 1
#   sync-worker 2  health 127.0.0.1:9102, talks to api-server 2
#   sync-worker 3  health 127.0.0.1:9103, talks to api-server 1
#
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth), RabbitMQ on
# 127.0.0.1:5672 (guest/guest) with rabbitmqctl usable (it creates the virtual host
# scaidrive_multinode), and a Rust toolchain if target/debug has no binaries yet.
#
# The run directory (MULTINODE_DIR, default /tmp/scaidrive-multinode) holds the logs
# (log/*.log), the pids (pid/*.pid), the shared data directory of both api-servers
# (data/: content store, admin-token) and env, the secret key and worker token every
# process shares. The database scaidrive_multinode and the virtual host belong to it: a new
# run directory starts them afresh, since stored secrets are sealed with its key.
#
# Environment: MULTINODE_DIR; MULTINODE_PORT_OFFSET (added to every port, default 0, to run
# a second fleet beside the first); MULTINODE_DATABASE (default scaidrive_multinode);
# MULTINODE_BUILD=1 to rebuild even if the binaries exist. OTEL_EXPORTER_OTLP_ENDPOINT and
# RUST_LOG pass through to every process.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

cmd=${1:-}
dir=${MULTINODE_DIR:-/tmp/scaidrive-multinode}
off=${MULTINODE_PORT_OFFSET:-0}
db=${MULTINODE_DATABASE:-scaidrive_multinode}
vhost=$db
pg="postgres://postgres@127.0.0.1:5432"
api_bin=$root/target/debug/api-server
worker_bin=$root/target/debug/sync-worker

rest_port() { echo $(($1 == 1 ? 8080 + off : 8090 + off)); }
grpc_port() { echo $(($1 == 1 ? 8081 + off : 8091 + off)); }
health_port() { echo $((9100 + $1 + off)); }
# Workers 1 and 3 talk to api-server 1, worker 2 to api-server 2.
worker_server() { echo $(($1 == 2 ? 2 : 1)); }

procs=(api-1 api-2 worker-1 worker-2 worker-3)

log() { printf '%s\n' "$*" >&2; }
die() {
  log "multinode: $*"
  exit 1
}

pidfile() { echo "$dir/pid/$1.pid"; }

# The pid of a process this script started and that still runs that binary, else nothing.
running_pid() {
  local f pid exe
  f=$(pidfile "$1")
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
  case "$exe" in
  "$api_bin" | "$worker_bin" | "$api_bin (deleted)" | "$worker_bin (deleted)") echo "$pid" ;;
  esac
}

probe_url() {
  case "$1" in
  api-*) echo "http://127.0.0.1:$(rest_port "${1#api-}")/readyz" ;;
  worker-*) echo "http://127.0.0.1:$(health_port "${1#worker-}")/readyz" ;;
  esac
}

ready() { curl -fsS -m 3 -o /dev/null "$(probe_url "$1")" 2>/dev/null; }

wait_ready() {
  local name=$1 pid=$2
  for _ in $(seq 120); do
    ready "$name" && return 0
    kill -0 "$pid" 2>/dev/null || die "$name exited; see $dir/log/$name.log"
    sleep 0.5
  done
  die "$name is not ready after 60 s; see $dir/log/$name.log"
}

psql_admin() { PGOPTIONS='--client-min-messages=warning' psql "$pg/postgres" -v ON_ERROR_STOP=1 -Atq "$@"; }

prepare() {
  command -v psql >/dev/null || die "psql not found (apt-get install -y postgresql-client)"
  command -v curl >/dev/null || die "curl not found"
  pg_isready -q -h 127.0.0.1 -p 5432 || die "PostgreSQL does not answer on 127.0.0.1:5432"
  mkdir -p "$dir"/{log,pid,data}
  local fresh=0
  if [ ! -f "$dir/env" ]; then
    fresh=1
    (
      umask 077
      printf 'SCAIDRIVE_SECRET_KEY=%s\nSCAIDRIVE_WORKER_TOKEN=%s\n' \
        "$(openssl rand -hex 32)" "$(openssl rand -hex 32)" >"$dir/env"
    )
  fi

  if [ "$fresh" = 1 ]; then
    log "new run directory $dir: a fresh database $db and virtual host $vhost"
    psql_admin -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null
  fi
  if [ -z "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
    psql_admin -c "CREATE DATABASE \"$db\"" >/dev/null
  fi

  rabbitmqctl -q status >/dev/null 2>&1 || die "rabbitmqctl cannot reach RabbitMQ (is it running? are you root?)"
  if [ "$fresh" = 1 ]; then
    rabbitmqctl -q delete_vhost "$vhost" >/dev/null 2>&1 || true
  fi
  if ! rabbitmqctl -q list_vhosts | grep -qx "$vhost"; then
    rabbitmqctl -q add_vhost "$vhost" >/dev/null
  fi
  rabbitmqctl -q set_permissions -p "$vhost" guest '.*' '.*' '.*' >/dev/null

  if [ "${MULTINODE_BUILD:-0}" = 1 ] || [ ! -x "$api_bin" ] || [ ! -x "$worker_bin" ]; then
    log "building api-server and sync-worker"
    cargo build -p api-server -p sync-worker
  fi
}

# Starts one process in its own session (a Ctrl-C in this terminal does not reach it).
launch() {
  local name=$1
  shift
  # shellcheck disable=SC1091
  (
    set -a
    . "$dir/env"
    set +a
    export DATABASE_URL="$pg/$db"
    export SCAIDRIVE_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/$vhost"
    export OTEL_RESOURCE_ATTRIBUTES="service.instance.id=multinode-$name" NO_COLOR=1
    exec setsid "$@" </dev/null >>"$dir/log/$name.log" 2>&1
  ) &
  echo $! >"$(pidfile "$name")"
}

start_one() {
  local name=$1 n pid
  pid=$(running_pid "$name")
  if [ -n "$pid" ]; then
    log "$name already running (pid $pid)"
    return 0
  fi
  n=${name#*-}
  case "$name" in
  api-*)
    launch "$name" "$api_bin" \
      --data-dir "$dir/data" \
      --listen "127.0.0.1:$(rest_port "$n")" \
      --grpc-listen "127.0.0.1:$(grpc_port "$n")" \
      --embedded-workers 0 \
      serve
    ;;
  worker-*)
    launch "$name" "$worker_bin" \
      --control-plane-url "http://127.0.0.1:$(grpc_port "$(worker_server "$n")")" \
      --worker-id "multinode-worker-$n" \
      --listen "127.0.0.1:$(health_port "$n")"
    ;;
  esac
  pid=$(cat "$(pidfile "$name")")
  wait_ready "$name" "$pid"
  log "$name ready (pid $pid)"
}

start() {
  prepare
  # api-server 1 first: on an empty database it migrates and bootstraps alone.
  for p in "${procs[@]}"; do start_one "$p"; done
  local rest1 rest2
  rest1=$(rest_port 1)
  rest2=$(rest_port 2)
  cat <<EOF

ScaiDrive multi-node fleet is up (logs in $dir/log):
  export URL=http://127.0.0.1:$rest1 TOKEN=\$(cat $dir/data/admin-token)
  # the other replica answers the same requests: http://127.0.0.1:$rest2
  deploy/dev/multinode.sh status | stop
EOF
}

status() {
  local all=0 pid state
  for p in "${procs[@]}"; do
    pid=$(running_pid "$p")
    if [ -z "$pid" ]; then
      state="stopped"
      all=1
    elif ready "$p"; then
      state="ready    pid $pid  $(probe_url "$p")"
    else
      state="starting or not ready  pid $pid  $(probe_url "$p")"
      all=1
    fi
    printf '%-9s %s\n' "$p" "$state"
  done
  return $all
}

stop_one() {
  local name=$1 secs=$2 pid
  pid=$(running_pid "$name")
  if [ -z "$pid" ]; then
    rm -f "$(pidfile "$name")"
    return 0
  fi
  kill -TERM "$pid"
  for _ in $(seq $((secs * 2))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name (pid $pid) still running after ${secs} s; killing it"
    kill -KILL "$pid" || true
  fi
  rm -f "$(pidfile "$name")"
  log "$name stopped"
}

stop() {
  # Workers first, while the api-servers still take their lease releases and hand-backs;
  # in parallel, each with the 120 s a file's commit may need.
  local pids=()
  for p in worker-1 worker-2 worker-3; do
    stop_one "$p" 120 &
    pids+=($!)
  done
  wait "${pids[@]}"
  stop_one api-2 30
  stop_one api-1 30
}

case "$cmd" in
start) start ;;
stop) stop ;;
status) status ;;
*)
  echo "usage: $0 start|stop|status" >&2
  exit 2
  ;;
esac
