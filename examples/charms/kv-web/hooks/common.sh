#!/bin/sh
# Every hook of the kv-web charm: hooks/<name> are symlinks to this script,
# which acts on the name it was called by (the classic charm idiom).
#
# The kv interface (this charm requires it, one relation at most):
#   our app bag (leader writes):  database = config `database`
#   our unit bag (every unit):    client-address = our private address
#   provider app bag (we read):   username, password, database
#   provider unit bags (we read): host, port of each kv-store unit
# Every hook ends in converge: work out the connection from the relation data
# as it is now, write it where the server reads it, and set the status.
set -eu

hook="$(basename "$0")"
CHARM_DIR="${CHARM_DIR:-${JUJU_CHARM_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}"
unit_slug="$(printf '%s' "${JUJU_UNIT_NAME:?JUJU_UNIT_NAME is not set}" | tr '/' '-')"
APP="${JUJU_UNIT_NAME%/*}"

# Workload state lives beside the charm dir, not in it (a refresh rewrites the
# charm files), and is named after the unit, since several units of this charm
# can share one host (each bound to its own address).
STATE_DIR="$(dirname "$CHARM_DIR")/workload-$unit_slug"
KVCONF="$STATE_DIR/kv.json"  # the connection the server uses; absent = no kv-store
KVUNIT="$STATE_DIR/kv-unit"  # the kv-store unit we talk to, kept while it stays
PIDFILE="$STATE_DIR/server.pid"
PORTFILE="$STATE_DIR/port"
ADDRFILE="$STATE_DIR/address"
STARTED="$STATE_DIR/started"
LOG="$STATE_DIR/server.log"

log() {
  juju-log --log-level INFO -- "$hook: $*"
}

alive() {
  kill -0 "$1" 2>/dev/null || return 1
  # An exited server that init has not reaped yet (a zombie) is gone for us.
  if [ -r "/proc/$1/stat" ]; then
    [ "$(sed 's/^.*) //' "/proc/$1/stat" | cut -d' ' -f1)" != Z ] || return 1
  fi
}

server_pid() {
  [ -f "$PIDFILE" ] || return 1
  pid="$(cat "$PIDFILE")"
  [ -n "$pid" ] && alive "$pid" || return 1
  # A recycled pid must not be mistaken for our server.
  if [ -r "/proc/$pid/cmdline" ] && ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "server.py --bind"; then
    return 1
  fi
  echo "$pid"
}

stop_server() {
  if pid="$(server_pid)"; then
    log "stopping server (pid $pid)"
    kill "$pid" 2>/dev/null || true
    i=0
    while alive "$pid" && [ "$i" -lt 50 ]; do
      sleep 0.1
      i=$((i + 1))
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
}

port_ok() {
  case "$1" in
    '' | *[!0-9]*) return 1 ;;
  esac
  [ "$1" -ge 1 ] && [ "$1" -le 65535 ]
}

# relation-set the pairs whose value differs from what the bag holds: an
# unchanged bag must not wake the other side (each real change runs its
# relation-changed). Usage: rel_update RID [--app] key=value...
rel_update() {
  rid="$1"
  shift
  flag=""
  owner="$JUJU_UNIT_NAME"
  if [ "$1" = --app ]; then
    flag=--app
    owner="$APP"
    shift
  fi
  changed=""
  for pair in "$@"; do
    [ "$(relation-get -r "$rid" $flag "${pair%%=*}" "$owner")" = "${pair#*=}" ] || changed=1
  done
  if [ -n "$changed" ]; then relation-set -r "$rid" $flag "$@"; fi
}

# Our kv relation (limit: 1), unless it is the one being broken: during
# kv-relation-broken Juju still lists it, but it is gone for us.
kv_relation() {
  for rid in $(relation-ids kv); do
    case "$hook" in kv-relation-broken) [ "$rid" = "${JUJU_RELATION_ID:-}" ] && continue ;; esac
    echo "$rid"
    return 0
  done
}

# The kv-store unit to use in relation RID: the one we used before if it is
# still there, else the first that published host and port. During
# kv-relation-departed the departing unit is skipped.
pick_unit() {
  rid="$1"
  departing=""
  [ "$hook" != kv-relation-departed ] || departing="${JUJU_DEPARTING_UNIT:-}"
  previous="$(cat "$KVUNIT" 2>/dev/null || true)"
  first=""
  for u in $(relation-list -r "$rid"); do
    [ "$u" != "$departing" ] || continue
    [ -n "$(relation-get -r "$rid" host "$u")" ] && [ -n "$(relation-get -r "$rid" port "$u")" ] || continue
    if [ "$u" = "$previous" ]; then
      echo "$u"
      return 0
    fi
    [ -n "$first" ] || first="$u"
  done
  echo "$first"
}

forget_kv() {
  rm -f "$KVCONF" "$KVUNIT"
}

# Write the connection for relation RID into $KVCONF and set kv_at to
# host:port; fails (and forgets) if the relation carries no usable one yet.
connect_kv() {
  rid="$1"
  remote_app="$(relation-list -r "$rid" --app)"
  unit="$(pick_unit "$rid")"
  if [ -z "$remote_app" ] || [ -z "$unit" ]; then
    forget_kv
    return 1
  fi
  host="$(relation-get -r "$rid" host "$unit")"
  port="$(relation-get -r "$rid" port "$unit")"
  # The credentials go through the environment, not argv: out of sight of ps.
  KV_USERNAME="$(relation-get -r "$rid" --app username "$remote_app")" \
    KV_PASSWORD="$(relation-get -r "$rid" --app password "$remote_app")" \
    KV_DATABASE="$(relation-get -r "$rid" --app database "$remote_app")" \
    python3 - "$KVCONF" "$host" "$port" <<'PY' || {
import json, os, sys
path, host, port = sys.argv[1:]
conn = {"host": host, "port": port}
conn.update({k: os.environ["KV_" + k.upper()] for k in ("username", "password", "database")})
if not all(conn.values()):
    sys.exit(1)  # kv-store's leader has not published our credentials yet
fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    json.dump(conn, f)
os.replace(path + ".tmp", path)
PY
    forget_kv
    return 1
  }
  if [ "$(cat "$KVUNIT" 2>/dev/null || true)" != "$unit" ]; then
    echo "$unit" >"$KVUNIT"
    log "using kv-store unit $unit at $host:$port"
  fi
  kv_at="$host:$port"
}

# Start the server if it is down or its address or port changed, and make the
# opened port match. Safe to run again.
ensure_serving() {
  port="$1"
  addr="$(unit-get private-address)"
  old_port="$(cat "$PORTFILE" 2>/dev/null || true)"
  old_addr="$(cat "$ADDRFILE" 2>/dev/null || true)"
  if ! server_pid >/dev/null || [ "$old_port" != "$port" ] || [ "$old_addr" != "$addr" ]; then
    stop_server
    status-set maintenance "starting server on $addr:$port"
    python3 "$CHARM_DIR/server.py" --bind "$addr" --port "$port" --config "$KVCONF" \
      --unit "$JUJU_UNIT_NAME" --pidfile "$PIDFILE" --log "$LOG"
    log "server started on $addr:$port (pid $(cat "$PIDFILE"))"
  fi
  if [ -n "$old_port" ] && [ "$old_port" != "$port" ]; then
    close-port "$old_port/tcp"
  fi
  open-port "$port/tcp"
  echo "$port" >"$PORTFILE"
  echo "$addr" >"$ADDRFILE"
}

converge() {
  rid="$(kv_relation)"
  kv=none
  if [ -n "$rid" ]; then
    # Only the leader may write the application bag.
    if [ "$(is-leader)" = True ]; then
      rel_update "$rid" --app database="$(config-get database)"
    fi
    rel_update "$rid" client-address="$(unit-get private-address)"
    if connect_kv "$rid"; then kv=connected; else kv=waiting; fi
  else
    forget_kv
  fi

  port="$(config-get port)"
  if ! port_ok "$port"; then
    status-set blocked "invalid port: $port"
    return 0
  fi
  if [ ! -f "$STARTED" ]; then
    status-set maintenance "waiting for start"
    return 0
  fi
  ensure_serving "$port"
  case "$kv" in
    none) status-set blocked "needs a kv relation" ;;
    waiting) status-set waiting "waiting for kv-store credentials and address" ;;
    connected) status-set active "connected to kv-store at $kv_at" ;;
  esac
}

mkdir -p "$STATE_DIR"
chmod 700 "$STATE_DIR"

case "$hook" in
  install)
    if ! command -v python3 >/dev/null; then
      status-set blocked "python3 is required"
      exit 1
    fi
    application-version-set "$(python3 -c 'import platform; print(platform.python_version())')"
    status-set maintenance "installed"
    ;;
  start)
    touch "$STARTED"
    converge
    ;;
  upgrade-charm)
    # New charm code may bring a new server.py: restart onto it.
    stop_server
    converge
    ;;
  config-changed | leader-elected | update-status)
    # update-status also heals a server that died between hooks.
    converge
    ;;
  kv-relation-created | kv-relation-joined | kv-relation-changed)
    log "relation $JUJU_RELATION_ID: ${JUJU_REMOTE_UNIT:-${JUJU_REMOTE_APP:-?}}"
    converge
    ;;
  kv-relation-departed)
    log "relation $JUJU_RELATION_ID: ${JUJU_DEPARTING_UNIT:-?} departed"
    converge
    ;;
  kv-relation-broken)
    log "relation $JUJU_RELATION_ID broken: forgetting the kv-store"
    converge
    ;;
  stop)
    stop_server
    if [ -f "$PORTFILE" ]; then
      close-port "$(cat "$PORTFILE")/tcp"
      rm -f "$PORTFILE"
    fi
    rm -f "$STARTED" "$ADDRFILE"
    status-set maintenance "stopped"
    ;;
  remove)
    stop_server
    rm -rf "$STATE_DIR"
    ;;
  *)
    log "nothing to do"
    ;;
esac
