#!/bin/sh
# Every hook of the http-hooks charm: hooks/<name> are symlinks to this script,
# which acts on the name it was called by (the classic charm idiom).
set -eu

hook="$(basename "$0")"
CHARM_DIR="${CHARM_DIR:-${JUJU_CHARM_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}"
unit_slug="$(printf '%s' "${JUJU_UNIT_NAME:?JUJU_UNIT_NAME is not set}" | tr '/' '-')"

# Workload state lives beside the charm dir, not in it (a refresh rewrites the
# charm files), and is named after the unit, since several units of this charm
# can share one host (each bound to its own address).
STATE_DIR="${HTTP_HOOKS_STATE_DIR:-$(dirname "$CHARM_DIR")/workload-$unit_slug}"
WWW="$STATE_DIR/www"
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
  if [ -r "/proc/$pid/cmdline" ] && ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "server.py"; then
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

write_page() {
  mkdir -p "$WWW"
  config-get content >"$WWW/index.html.tmp"
  mv "$WWW/index.html.tmp" "$WWW/index.html"
}

publish_website() {
  for rid in $(relation-ids website 2>/dev/null || true); do
    relation-set -r "$rid" hostname="$1" port="$2"
  done
}

# Start the server if it is down or its address or port changed, and make the
# opened port match. Safe to run again after a failure halfway.
ensure_serving() {
  port="$(config-get port)"
  case "$port" in
    '' | *[!0-9]*) port=0 ;;
  esac
  if [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
    status-set blocked "invalid port: $(config-get port)"
    return 0
  fi
  addr="$(unit-get private-address)"
  old_port="$(cat "$PORTFILE" 2>/dev/null || true)"
  old_addr="$(cat "$ADDRFILE" 2>/dev/null || true)"
  write_page
  if ! server_pid >/dev/null || [ "$old_port" != "$port" ] || [ "$old_addr" != "$addr" ]; then
    stop_server
    status-set maintenance "starting server on $addr:$port"
    python3 "$CHARM_DIR/server.py" --bind "$addr" --port "$port" --dir "$WWW" --pidfile "$PIDFILE" --log "$LOG"
    log "server started on $addr:$port (pid $(cat "$PIDFILE"))"
  fi
  if [ -n "$old_port" ] && [ "$old_port" != "$port" ]; then
    close-port "$old_port/tcp"
  fi
  open-port "$port/tcp"
  publish_website "$addr" "$port"
  echo "$port" >"$PORTFILE"
  echo "$addr" >"$ADDRFILE"
  status-set active "serving on :$port"
}

mkdir -p "$STATE_DIR"

case "$hook" in
  install)
    if ! command -v python3 >/dev/null; then
      status-set blocked "python3 is required"
      exit 1
    fi
    mkdir -p "$WWW"
    application-version-set "$(python3 -c 'import platform; print(platform.python_version())')"
    status-set maintenance "installed"
    ;;
  leader-elected)
    log "this unit is now the leader"
    ;;
  config-changed)
    write_page
    # Before start (first deploy) only the page is written; start serves it.
    if [ -f "$STARTED" ]; then
      ensure_serving
    else
      status-set maintenance "configured; waiting for start"
    fi
    ;;
  start)
    touch "$STARTED"
    ensure_serving
    ;;
  update-status)
    # Also heals a server that died between hooks.
    if [ -f "$STARTED" ]; then ensure_serving; fi
    ;;
  upgrade-charm)
    # New charm code may bring a new server.py: restart onto it.
    if [ -f "$STARTED" ]; then
      stop_server
      ensure_serving
    fi
    ;;
  website-relation-joined | website-relation-changed)
    relation-set hostname="$(unit-get private-address)" port="$(config-get port)"
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
