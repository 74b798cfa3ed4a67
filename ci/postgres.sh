# shellcheck shell=bash
# ci/postgres.sh: a throwaway PostgreSQL cluster for the scale-out tests (issue 11).
#
# Source it (do not run it), then:
#
#   pg_install   # Debian's PostgreSQL, installed only when missing
#   pg_up        # initdb + pg_ctl start in a temp dir; exports DATABASE_URL
#   ...          # use $DATABASE_URL
#   pg_restart   # stop the server (fast shutdown: clients are disconnected) and start it
#                # again on the same data, port and password (the fault tests use it)
#   pg_down      # stop the server, remove the temp dir (safe to call twice)
#
# Every function returns non-zero on failure, after printing why (with the tail of the
# relevant log) to stderr. Nothing here sets shell options or traps, so the file can be
# sourced into a script running under `set -euo pipefail`. See ci/README.md.
#
# Inputs (optional):
#   PG_CI_PORT     TCP port on 127.0.0.1 (default 15432; keep it below 32768, the start of
#                  Linux's ephemeral port range)
#   PG_CI_OS_USER  Unix user that runs the server when we are root (default postgres)
#   PG_CI_BIN      directory holding initdb/pg_ctl/postgres (default: the newest
#                  /usr/lib/postgresql/*/bin)
#   PG_CI_KEEP     set to 1 to keep the temp dir (logs) when pg_up fails
# Exported by pg_up:
#   DATABASE_URL   postgres://strata:PASSWORD@127.0.0.1:PORT/strata (password auth, SCRAM)
#   PG_CI_DIR      the temp dir: data/, server.log, and the Unix socket
#   PG_CI_PID      the postmaster's PID
#   PG_CI_BIN      as above

PG_CI_PORT=${PG_CI_PORT:-15432}

# Installs the server only when no PostgreSQL server binaries are present. Does not create or
# start Debian's default "main" cluster: pg_up runs its own.
pg_install() {
  if _pg_find_bin >/dev/null; then
    return 0
  fi
  local log dropin_dir=/etc/postgresql-common/createcluster.d made_dir=
  log=$(mktemp -t pg-install.XXXXXX.log) || return 1
  # postgresql-common reads this directory: tell it not to create (and start) a system
  # cluster on port 5432 while the package installs. The file is removed right after.
  if [ ! -d "$dropin_dir" ]; then
    mkdir -p "$dropin_dir" || { rm -f "$log"; return 1; }
    made_dir=1
  fi
  echo "create_main_cluster = false" >"$dropin_dir/zz-strata-ci.conf"
  echo "pg_install: installing PostgreSQL from Debian (apt-get)..." >&2
  local rc=0
  if [ -z "${CI_APT_UPDATED:-}" ]; then
    apt-get -o DPkg::Lock::Timeout=300 update -q >>"$log" 2>&1 || rc=$?
    if [ "$rc" = 0 ]; then CI_APT_UPDATED=1; fi
  fi
  if [ "$rc" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q \
      --no-install-recommends postgresql >>"$log" 2>&1 || rc=$?
  fi
  rm -f "$dropin_dir/zz-strata-ci.conf"
  if [ -n "$made_dir" ]; then rmdir "$dropin_dir" 2>/dev/null || true; fi
  if [ "$rc" != 0 ] || ! _pg_find_bin >/dev/null; then
    echo "pg_install: apt-get failed (exit $rc); last lines of its output:" >&2
    tail -n 20 "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
  return 0
}

pg_up() {
  if [ -n "${PG_CI_DIR:-}" ] && [ -d "$PG_CI_DIR" ] && _pg_alive "${PG_CI_PID:-}" &&
     _pg_is_ours "$PG_CI_PID" "$PG_CI_DIR"; then
    echo "pg_up: already up at $PG_CI_DIR (PID $PG_CI_PID); DATABASE_URL is set" >&2
    return 0
  fi
  local bin
  bin=$(_pg_find_bin) || {
    echo "pg_up: no PostgreSQL server binaries in ${PG_CI_BIN:-/usr/lib/postgresql/*/bin}; run pg_install" >&2
    return 1
  }
  PG_CI_BIN=$bin
  export PG_CI_BIN
  local port=$PG_CI_PORT
  if _pg_port_busy "$port"; then
    echo "pg_up: 127.0.0.1:$port is already in use (a leftover server? set PG_CI_PORT to use another port):" >&2
    ss -ltnp "sport = :$port" >&2 2>/dev/null || true
    return 1
  fi

  # The server refuses to run as root: run it as an unprivileged user.
  local os_user run=()
  if [ "$(id -u)" = 0 ]; then
    os_user=${PG_CI_OS_USER:-postgres}
    if ! id -u "$os_user" >/dev/null 2>&1; then
      echo "pg_up: running as root, but there is no user '$os_user' to run the server (set PG_CI_OS_USER)" >&2
      return 1
    fi
    run=(runuser -u "$os_user" --)
  else
    os_user=$(id -un)
  fi

  local dir
  dir=$(mktemp -d -t pg-ci.XXXXXX) || { echo "pg_up: mktemp failed" >&2; return 1; }
  : >"$dir/.strata-ci-pg"   # marker: pg_down removes only directories that carry it
  PG_CI_DIR=$dir
  export PG_CI_DIR
  PG_CI_PID=
  if [ "${#run[@]}" != 0 ]; then
    chown "$os_user:" "$dir" || { _pg_fail "cannot chown $dir to $os_user"; return 1; }
    if ! "${run[@]}" test -w "$dir"; then
      _pg_fail "user $os_user cannot write to $dir (is a parent of TMPDIR=${TMPDIR:-/tmp} closed to it?)"
      return 1
    fi
  fi

  # Superuser "postgres": trust, but only on the Unix socket in $dir. TCP: SCRAM passwords.
  # C locale: no dependency on the locales generated on the machine. --no-sync skips only
  # initdb's one-off flush of the template files it writes (1 s of the ~2 s start); the
  # server itself runs fully durable (below), and the cluster does not outlive the machine's
  # page cache anyway.
  if ! (cd "$dir" && "${run[@]}" "$PG_CI_BIN/initdb" -D "$dir/data" -U postgres -E UTF8 --locale=C --no-sync \
          --auth-local=trust --auth-host=scram-sha-256) >"$dir/initdb.log" 2>&1; then
    _pg_fail "initdb failed" "$dir/initdb.log"
    return 1
  fi
  # Durable on purpose (fsync, synchronous commit, full page writes: the defaults, spelled
  # out): this is the real engine the metadata store will run on.
  cat >>"$dir/data/postgresql.conf" <<CONF

# --- ci/postgres.sh ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 200
fsync = on
synchronous_commit = on
full_page_writes = on
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
CONF

  if ! (cd "$dir" && "${run[@]}" "$PG_CI_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start) \
      >"$dir/pg_ctl.log" 2>&1; then
    _pg_fail "pg_ctl start failed" "$dir/pg_ctl.log" "$dir/server.log"
    return 1
  fi
  PG_CI_PID=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null) || PG_CI_PID=
  export PG_CI_PID
  if ! _pg_alive "$PG_CI_PID"; then
    _pg_fail "the server is not running after pg_ctl start" "$dir/server.log"
    return 1
  fi

  local password
  password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  if ! "$PG_CI_BIN/psql" -X -q -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
        -c "CREATE ROLE strata LOGIN CREATEDB PASSWORD '$password'" \
        -c "CREATE DATABASE strata OWNER strata" >"$dir/setup.log" 2>&1; then
    _pg_fail "creating role and database 'strata' failed" "$dir/setup.log" "$dir/server.log"
    return 1
  fi

  # Ready means: a password login over TCP to the strata database answers a query.
  local url="postgres://strata:$password@127.0.0.1:$port/strata" _ ok=
  for _ in $(seq 50); do
    if "$PG_CI_BIN/psql" -X -q -At -d "$url" -c 'SELECT 1' >"$dir/ready.log" 2>&1; then
      ok=1
      break
    fi
    sleep 0.2
  done
  if [ -z "$ok" ]; then
    _pg_fail "the server does not answer on $url" "$dir/ready.log" "$dir/server.log"
    return 1
  fi
  DATABASE_URL=$url
  export DATABASE_URL
  return 0
}

# Stops the server (pg_ctl stop, then signals to its PID if that fails) and removes the temp
# dir. A no-op when nothing is up, so it is safe to call twice or after a failed pg_up.
# Returns non-zero only if the server could not be stopped or the dir not removed.
pg_down() {
  local dir=${PG_CI_DIR:-}
  if [ -z "$dir" ]; then
    return 0
  fi
  _pg_stop "$dir" || return 1
  _pg_remove "$dir" || return 1
  unset PG_CI_DIR PG_CI_PID DATABASE_URL
  return 0
}

# Restarts the server of pg_up on the same data directory and port: every connection is
# cut (fast shutdown), committed data stays, DATABASE_URL stays valid. Updates PG_CI_PID.
pg_restart() {
  local dir=${PG_CI_DIR:-} run=()
  if [ -z "$dir" ] || [ ! -d "$dir/data" ]; then
    echo "pg_restart: no server of pg_up (PG_CI_DIR is not set)" >&2
    return 1
  fi
  _pg_stop "$dir" || return 1
  if [ "$(id -u)" = 0 ]; then
    run=(runuser -u "$(stat -c %U "$dir/data")" --)
  fi
  if ! (cd "$dir" && "${run[@]}" "${PG_CI_BIN:-$(_pg_find_bin)}/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start) \
      >>"$dir/pg_ctl.log" 2>&1; then
    echo "pg_restart: pg_ctl start failed; see $dir/pg_ctl.log and $dir/server.log" >&2
    tail -n 25 "$dir/server.log" >&2 2>/dev/null || true
    return 1
  fi
  PG_CI_PID=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null) || PG_CI_PID=
  export PG_CI_PID
  return 0
}

# --- helpers (private) ---

# Prints the bin directory of the newest installed server (or $PG_CI_BIN if set).
_pg_find_bin() {
  local d best=
  if [ -n "${PG_CI_BIN:-}" ]; then
    [ -x "$PG_CI_BIN/postgres" ] && [ -x "$PG_CI_BIN/initdb" ] && [ -x "$PG_CI_BIN/pg_ctl" ] || return 1
    echo "$PG_CI_BIN"
    return 0
  fi
  # sort -V: 9 < 10 < 15.
  for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V); do
    if [ -x "$d/postgres" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/psql" ]; then
      best=$d
    fi
  done
  [ -n "$best" ] || return 1
  echo "$best"
}

# Stops the server whose data dir is DIR/data, if it runs: pg_ctl stop -m fast, then SIGQUIT
# (immediate shutdown), then SIGKILL, each to the PID in postmaster.pid (or $PG_CI_PID).
_pg_stop() {
  local dir=$1 pid=${PG_CI_PID:-} run=()
  if [ -f "$dir/data/postmaster.pid" ]; then
    pid=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null) || true
  fi
  if ! _pg_alive "$pid" || ! _pg_is_ours "$pid" "$dir"; then
    return 0
  fi
  if [ "$(id -u)" = 0 ]; then
    run=(runuser -u "$(stat -c %U "$dir/data")" --)
  fi
  (cd "$dir" && "${run[@]}" "${PG_CI_BIN:-$(_pg_find_bin)}/pg_ctl" -D "$dir/data" -m fast -w -t 20 stop) \
    >>"$dir/pg_ctl.log" 2>&1 || true
  if _pg_alive "$pid"; then
    kill -QUIT "$pid" 2>/dev/null || true
    _pg_wait_gone "$pid" 50
  fi
  if _pg_alive "$pid"; then
    kill -KILL "$pid" 2>/dev/null || true
    _pg_wait_gone "$pid" 50
  fi
  if _pg_alive "$pid"; then
    echo "pg_down: PostgreSQL (PID $pid) is still running; leaving $dir in place" >&2
    return 1
  fi
  # The postmaster was re-parented to PID 1 (pg_ctl exited long ago): give PID 1 up to 3 s to
  # reap it, so that `pgrep` no longer lists a <defunct> entry.
  local _
  for _ in $(seq 30); do
    [ -e "/proc/$pid" ] || break
    sleep 0.1
  done
  return 0
}

# Removes DIR, but only if it carries the marker pg_up puts there.
_pg_remove() {
  local dir=$1
  [ -d "$dir" ] || return 0
  if [ ! -f "$dir/.strata-ci-pg" ]; then
    echo "pg_down: $dir has no .strata-ci-pg marker; not removing it" >&2
    return 1
  fi
  rm -rf "$dir" || { echo "pg_down: could not remove $dir" >&2; return 1; }
  return 0
}

# True if the process exists and is not a zombie.
_pg_alive() {
  local pid=${1:-} state
  case "$pid" in '' | *[!0-9]*) return 1 ;; esac
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# True if PID is a postgres server on our data dir (guards against PID reuse).
_pg_is_ours() {
  local cmd
  cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
  [[ $cmd == *"$2/data"* ]]
}

_pg_wait_gone() {
  local _
  for _ in $(seq "$2"); do
    _pg_alive "$1" || return 0
    sleep 0.1
  done
  return 0
}

_pg_port_busy() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Prints the message and the tails of the given logs, then stops what pg_up started and
# removes its temp dir (kept, with the server stopped, when PG_CI_KEEP=1).
_pg_fail() {
  local msg=$1 f dir=${PG_CI_DIR:-}
  shift
  echo "pg_up: $msg" >&2
  for f in "$@"; do
    if [ -s "$f" ]; then
      echo "--- last lines of $f ---" >&2
      tail -n 25 "$f" >&2
    fi
  done
  [ -n "$dir" ] || return 0
  _pg_stop "$dir" || return 0
  if [ "${PG_CI_KEEP:-}" = 1 ]; then
    echo "pg_up: kept $dir (PG_CI_KEEP=1); remove it with: rm -rf $dir" >&2
  else
    _pg_remove "$dir" || return 0
  fi
  unset PG_CI_DIR PG_CI_PID
  return 0
}
