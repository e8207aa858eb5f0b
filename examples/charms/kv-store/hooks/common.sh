#!/bin/sh
# Every hook of the kv-store charm: hooks/<name> are symlinks to this script,
# which acts on the name it was called by (the classic charm idiom).
#
# The kv interface (this charm provides it):
#   requirer app bag:  database   (optional) the database it wants; default: its app name
#   provider app bag:  username, password, database   (written by our leader only)
#   provider unit bag: host, port   (every unit: where its own server listens)
# Our leader makes one user per relation and keeps all of them in leader data
# (`creds-<relation id>` = user:password:database), so that every unit, leader
# or not, serves the same users.
set -eu

hook="$(basename "$0")"
CHARM_DIR="${CHARM_DIR:-${JUJU_CHARM_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}"
unit_slug="$(printf '%s' "${JUJU_UNIT_NAME:?JUJU_UNIT_NAME is not set}" | tr '/' '-')"
APP="${JUJU_UNIT_NAME%/*}"

# Workload state lives beside the charm dir, not in it (a refresh rewrites the
# charm files), and is named after the unit, since several units of this charm
# can share one host (each bound to its own address).
STATE_DIR="$(dirname "$CHARM_DIR")/workload-$unit_slug"
USERS="$STATE_DIR/users.json"
DATA="$STATE_DIR/data"
PIDFILE="$STATE_DIR/server.pid"
PORTFILE="$STATE_DIR/port"
ADDRFILE="$STATE_DIR/address"
DATABASES="$STATE_DIR/databases"
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

valid_name() {
  case "$1" in
    '' | [!A-Za-z0-9]* | *[!A-Za-z0-9._-]*) return 1 ;;
  esac
  [ "${#1}" -le 64 ]
}

port_ok() {
  case "$1" in
    '' | *[!0-9]*) return 1 ;;
  esac
  [ "$1" -ge 1 ] && [ "$1" -le 65535 ]
}

# The kv relations still alive: during kv-relation-broken Juju still lists the
# relation that is going away, but nothing may be published on it any more.
live_kv_relations() {
  for rid in $(relation-ids kv); do
    case "$hook" in kv-relation-broken) [ "$rid" = "${JUJU_RELATION_ID:-}" ] && continue ;; esac
    echo "$rid"
  done
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

# Leader only: once a unit of the remote application has joined kv relation
# RID, make sure that application has a user, kept in leader data, and
# published in our application bag of that relation.
ensure_creds() {
  rid="$1"
  relnum="${rid##*:}"
  remote_app="$(relation-list -r "$rid" --app)"
  [ -n "$remote_app" ] && [ -n "$(relation-list -r "$rid")" ] || return 0
  user="$remote_app-$relnum"
  # The requirer may name its database in its application bag.
  database="$(relation-get -r "$rid" --app database "$remote_app")"
  if ! valid_name "$database"; then
    [ -z "$database" ] || log "ignoring invalid database name requested by $remote_app"
    database="$remote_app"
  fi
  old="$(leader-get "creds-$relnum")"
  if [ -n "$old" ]; then
    password="${old#*:}"
    password="${password%%:*}"
  else
    password="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
  fi
  if [ "$user:$password:$database" != "$old" ]; then
    leader-set "creds-$relnum=$user:$password:$database"
    log "user $user for $remote_app on database $database (relation $rid)"
  fi
  rel_update "$rid" --app username="$user" password="$password" database="$database"
}

# Turn the leader settings (as of now, this hook's writes included) into the
# users file the server reads.
sync_users() {
  leader-get --format=json | python3 "$CHARM_DIR/users.py" "$USERS" >"$DATABASES.tmp"
  mv "$DATABASES.tmp" "$DATABASES"
}

# Start the server if it is down or its address or port changed, make the
# opened port match and publish where we listen. Safe to run again.
ensure_serving() {
  port="$1"
  addr="$(unit-get private-address)"
  old_port="$(cat "$PORTFILE" 2>/dev/null || true)"
  old_addr="$(cat "$ADDRFILE" 2>/dev/null || true)"
  if ! server_pid >/dev/null || [ "$old_port" != "$port" ] || [ "$old_addr" != "$addr" ]; then
    stop_server
    status-set maintenance "starting server on $addr:$port"
    python3 "$CHARM_DIR/server.py" --bind "$addr" --port "$port" --users "$USERS" --data "$DATA" \
      --pidfile "$PIDFILE" --log "$LOG"
    log "server started on $addr:$port (pid $(cat "$PIDFILE"))"
  fi
  if [ -n "$old_port" ] && [ "$old_port" != "$port" ]; then
    close-port "$old_port/tcp"
  fi
  open-port "$port/tcp"
  echo "$port" >"$PORTFILE"
  echo "$addr" >"$ADDRFILE"
  for rid in $(live_kv_relations); do
    rel_update "$rid" host="$addr" port="$port"
  done
}

# What every hook ends with: credentials (leader), users file, server, status.
converge() {
  if [ "$(is-leader)" = True ]; then
    for rid in $(live_kv_relations); do ensure_creds "$rid"; done
  fi
  sync_users
  port="$(config-get port)"
  if ! port_ok "$port"; then
    status-set blocked "invalid port: $port"
    return 0
  fi
  if [ ! -f "$STARTED" ]; then
    # Before start (first deploy) nothing is served yet; start serves.
    status-set maintenance "waiting for start"
    return 0
  fi
  ensure_serving "$port"
  status-set active "serving $(cat "$DATABASES") database(s) on :$port"
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
  config-changed | leader-elected | leader-settings-changed | update-status)
    # update-status also heals a server that died between hooks.
    [ "$hook" != leader-elected ] || log "this unit is now the leader"
    converge
    ;;
  upgrade-charm)
    # New charm code may bring a new server.py: restart onto it.
    stop_server
    converge
    ;;
  kv-relation-created)
    # No unit of the requirer has joined yet: its user comes in relation-joined.
    log "relation $JUJU_RELATION_ID created with ${JUJU_REMOTE_APP:-?}"
    ;;
  kv-relation-joined | kv-relation-changed)
    log "relation $JUJU_RELATION_ID: ${JUJU_REMOTE_UNIT:-${JUJU_REMOTE_APP:-?}}"
    # in the relation again: its relation-broken is the relation's end after all
    rm -f "$STATE_DIR/leaving-${JUJU_RELATION_ID##*:}"
    converge
    ;;
  kv-relation-departed)
    log "relation $JUJU_RELATION_ID: ${JUJU_DEPARTING_UNIT:-?} departed"
    # This unit itself is leaving (removed, migrated away): the relation stays for
    # the others, so its relation-broken must not drop the user.
    if [ "${JUJU_DEPARTING_UNIT:-}" = "$JUJU_UNIT_NAME" ]; then
      touch "$STATE_DIR/leaving-${JUJU_RELATION_ID##*:}"
    fi
    ;;
  kv-relation-broken)
    # The relation is gone: its user goes too (the leader drops it from leader
    # data; the other units follow in leader-settings-changed). A unit that broke
    # the relation only because it is leaving leaves the user to the others.
    relnum="${JUJU_RELATION_ID##*:}"
    if [ -f "$STATE_DIR/leaving-$relnum" ]; then
      log "leaving relation $JUJU_RELATION_ID: its user stays for the other units"
    elif [ "$(is-leader)" = True ] && [ -n "$(leader-get "creds-$relnum")" ]; then
      leader-set "creds-$relnum="
      log "dropped the user of relation $JUJU_RELATION_ID"
    fi
    converge
    ;;
  cluster-relation-created | cluster-relation-departed | cluster-relation-broken)
    log "peer relation $JUJU_RELATION_ID: ${JUJU_DEPARTING_UNIT:-${JUJU_REMOTE_APP:-}}"
    ;;
  cluster-relation-joined | cluster-relation-changed)
    # Peers learn each other's address; nothing more is shared between units.
    rel_update "$JUJU_RELATION_ID" host="$(unit-get private-address)"
    log "peer relation $JUJU_RELATION_ID: $(relation-list | wc -l) peer(s)"
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
