# shellcheck shell=bash
# ci/ceph-rgw.sh: a throwaway single-node Ceph cluster with an S3 gateway (RGW) for the
# scale-out tests (issue 11).
#
# Source it (do not run it), then:
#
#   ceph_install   # Debian's ceph-mon, ceph-osd, radosgw, ceph-common, only when missing
#   ceph_up        # 1 mon + 1 OSD + 1 radosgw on 127.0.0.1, state in a temp dir; exports S3_*
#   ...            # use $S3_ENDPOINT, $S3_ACCESS_KEY, $S3_SECRET_KEY, $S3_REGION, $S3_BUCKET
#   ceph_down      # stop the three daemons by PID, remove the temp dir (safe to call twice)
#
# No cephx, no systemd, no mgr (RGW does not need one). Every function returns non-zero on
# failure, after printing why (with the tail of the relevant log) to stderr. Nothing here
# sets shell options or traps, so the file can be sourced into a script running under
# `set -euo pipefail`. See ci/README.md.
#
# Inputs (optional):
#   CEPH_CI_MON_PORT   mon (msgr v2) port on 127.0.0.1 (default 16789)
#   CEPH_CI_RGW_PORT   S3 port on 127.0.0.1 (default 17480)
#   CEPH_CI_OSD_PORTS  range the OSD binds its ports in (default 16800-16899)
#                      (keep every port below 32768, the start of Linux's ephemeral range)
#   CEPH_CI_STORE      OSD backend: bluestore (default; a 4 GiB sparse file) or memstore
#                      (RAM, about 3 s faster to start)
#   CEPH_CI_OSD_SIZE_GB  size of the bluestore file / memstore cap (default 4)
#   CEPH_CI_BUCKET     bucket to create (default strata-ci; set it empty for none)
#   CEPH_CI_KEEP       set to 1 to keep the temp dir (logs) when ceph_up fails
#   CEPH_CI_VERBOSE    set to 1 to print the time each ceph_up step took
# Exported by ceph_up:
#   S3_ENDPOINT        http://127.0.0.1:PORT (path-style addressing)
#   S3_ACCESS_KEY, S3_SECRET_KEY   generated for this cluster's S3 user "strata-ci"
#   S3_REGION          us-east-1 (SigV4 signing region; RGW accepts it)
#   S3_BUCKET          the bucket created (unset when CEPH_CI_BUCKET is empty)
#   CEPH_CONF          the cluster's ceph.conf, so `ceph -s` and `radosgw-admin` work by hand
#   CEPH_CI_DIR        the temp dir: ceph.conf, *.log, the mon/OSD/RGW state
#   CEPH_CI_PIDS       "MON_PID OSD_PID RGW_PID"

CEPH_CI_MON_PORT=${CEPH_CI_MON_PORT:-16789}
CEPH_CI_RGW_PORT=${CEPH_CI_RGW_PORT:-17480}
CEPH_CI_OSD_PORTS=${CEPH_CI_OSD_PORTS:-16800-16899}

# Installs the daemons only when one of the commands ceph_up needs is missing.
ceph_install() {
  if _ceph_have_tools; then
    return 0
  fi
  local log rc=0 pkgs=(ceph-mon ceph-osd radosgw ceph-common)
  command -v curl >/dev/null 2>&1 || pkgs+=(curl)   # ceph_up probes and signs S3 with curl
  log=$(mktemp -t ceph-install.XXXXXX.log) || return 1
  echo "ceph_install: installing Ceph from Debian (apt-get, about a minute)..." >&2
  if [ -z "${CI_APT_UPDATED:-}" ]; then
    apt-get -o DPkg::Lock::Timeout=300 update -q >>"$log" 2>&1 || rc=$?
    if [ "$rc" = 0 ]; then CI_APT_UPDATED=1; fi
  fi
  if [ "$rc" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q \
      --no-install-recommends "${pkgs[@]}" >>"$log" 2>&1 || rc=$?
  fi
  if [ "$rc" != 0 ] || ! _ceph_have_tools; then
    echo "ceph_install: apt-get failed (exit $rc); last lines of its output:" >&2
    tail -n 20 "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
  return 0
}

_ceph_have_tools() {
  local c
  for c in ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool curl; do
    command -v "$c" >/dev/null 2>&1 || return 1
  done
  return 0
}

ceph_up() {
  if [ -n "${CEPH_CI_DIR:-}" ] && [ -d "$CEPH_CI_DIR" ] && _ceph_all_alive "$CEPH_CI_DIR"; then
    echo "ceph_up: already up at $CEPH_CI_DIR (PIDs ${CEPH_CI_PIDS:-?}); S3_ENDPOINT is set" >&2
    return 0
  fi
  if ! _ceph_have_tools; then
    echo "ceph_up: ceph-mon, ceph-osd, radosgw, radosgw-admin, ceph, monmaptool or curl is missing; run ceph_install" >&2
    return 1
  fi
  local mon_port=$CEPH_CI_MON_PORT rgw_port=$CEPH_CI_RGW_PORT store=${CEPH_CI_STORE:-bluestore}
  local size_gb=${CEPH_CI_OSD_SIZE_GB:-4} osd_min=${CEPH_CI_OSD_PORTS%-*} osd_max=${CEPH_CI_OSD_PORTS#*-}
  local bucket=${CEPH_CI_BUCKET-strata-ci} p
  for p in "$mon_port" "$rgw_port" "$osd_min" "$osd_max" "$size_gb"; do
    case "$p" in '' | *[!0-9]*)
      echo "ceph_up: bad port or size '$p' (CEPH_CI_MON_PORT, CEPH_CI_RGW_PORT, CEPH_CI_OSD_PORTS=MIN-MAX, CEPH_CI_OSD_SIZE_GB)" >&2
      return 1 ;;
    esac
  done
  case "$store" in bluestore | memstore) ;; *)
    echo "ceph_up: CEPH_CI_STORE must be bluestore or memstore, not '$store'" >&2
    return 1 ;;
  esac
  for p in "$mon_port" "$rgw_port"; do
    if _ceph_port_busy "$p"; then
      echo "ceph_up: 127.0.0.1:$p is already in use (a leftover cluster? set CEPH_CI_MON_PORT / CEPH_CI_RGW_PORT to use others):" >&2
      ss -ltnp "sport = :$p" >&2 2>/dev/null || true
      return 1
    fi
  done

  local D
  D=$(mktemp -d -t ceph-ci.XXXXXX) || { echo "ceph_up: mktemp failed" >&2; return 1; }
  : >"$D/.strata-ci-ceph"   # marker: ceph_down removes only directories that carry it
  mkdir -p "$D/mon.a" "$D/osd.0" "$D/rgw.a" "$D/run"
  CEPH_CI_DIR=$D
  CEPH_CI_PIDS=
  export CEPH_CI_DIR CEPH_CI_PIDS
  local _ceph_t0=$EPOCHREALTIME   # read by _ceph_step (bash locals are dynamically scoped)

  local fsid osd_uuid
  fsid=$(cat /proc/sys/kernel/random/uuid)
  osd_uuid=$(cat /proc/sys/kernel/random/uuid)
  # msgr v2 only, "crc" everywhere: with auth none, RGW loops on "get_initial_auth_request
  # returned -13" unless every ms_*_mode is crc, and the OSD hangs in mkfs/boot when the
  # monmap and the bind settings disagree about v1/v2.
  cat >"$D/ceph.conf" <<CONF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$mon_port]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
ms bind port min = $osd_min
ms bind port max = $osd_max
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
ms client mode = crc
ms mon service mode = crc
ms service mode = crc
ms cluster mode = crc
ms mon cluster mode = crc
run dir = $D/run
log file = $D/\$name.log
keyring = $D/keyring
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
mon data avail warn = 2
mon data avail crit = 1
paxos propose interval = 0.1
osd crush chooseleaf type = 0
[mon]
admin socket = $D/run/\$name.asok
[osd]
admin socket = $D/run/\$name.asok
# A polite neighbour for the builds and tests on the same machine (the default is 4 GiB).
osd memory target = 1073741824
[mon.a]
mon data = $D/mon.a
[osd.0]
osd data = $D/osd.0
osd objectstore = $store
# bluestore: a sparse file, outside "osd data" (inside it, mkfs makes a self-referencing symlink)
bluestore block path = $D/osd.0.block
bluestore block create = true
bluestore block size = $((size_gb * 1024 * 1024 * 1024))
bluestore block db create = false
bluestore block wal create = false
bluestore fsck on mkfs = false
memstore device bytes = $((size_gb * 1024 * 1024 * 1024))
[client.rgw.a]
admin socket = $D/run/\$name.asok
rgw data = $D/rgw.a
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw dns name = localhost
CONF
  : >"$D/keyring"
  local C=(-c "$D/ceph.conf")

  # --- mon, and meanwhile the OSD's object store (mkfs needs only ceph.conf: --no-mon-config)
  if ! monmaptool --create --addv a "[v2:127.0.0.1:$mon_port]" --fsid "$fsid" "$D/monmap" >"$D/mkfs.log" 2>&1 ||
     ! ceph-mon "${C[@]}" --mkfs -i a --monmap "$D/monmap" >>"$D/mkfs.log" 2>&1; then
    _ceph_fail "creating the mon failed" "$D/mkfs.log" "$D/mon.a.log"
    return 1
  fi
  # Detached like the daemons (no job of the caller's shell); its exit status lands in a file.
  (
    (rc=0; timeout 120 ceph-osd "${C[@]}" --no-mon-config -i 0 --mkfs --osd-uuid "$osd_uuid" || rc=$?
     echo "$rc" >"$D/osd-mkfs.rc") </dev/null >"$D/osd-mkfs.log" 2>&1 &
  )
  if ! _ceph_spawn mon.a ceph-mon "${C[@]}" -f -i a; then
    _ceph_wait_mkfs "$D" >/dev/null
    _ceph_fail "could not start ceph-mon" "$D/mon.a.out"
    return 1
  fi
  _ceph_step "mon started"
  if ! _ceph_wait_mon "$D" 30; then
    _ceph_wait_mkfs "$D" >/dev/null
    if _ceph_alive "$(_ceph_pid mon.a)"; then
      _ceph_fail "ceph-mon has not formed a quorum after 30 s" "$D/mon.a.out" "$D/mon.a.log"
    else
      _ceph_fail "ceph-mon exited during startup (port 127.0.0.1:$mon_port taken?)" "$D/mon.a.out" "$D/mon.a.log"
    fi
    return 1
  fi
  _ceph_step "mon in quorum"

  # --- OSD (id 0)
  if ! timeout 60 ceph "${C[@]}" --connect-timeout 30 osd new "$osd_uuid" 0 >/dev/null 2>"$D/osd-new.err"; then
    _ceph_wait_mkfs "$D" >/dev/null
    _ceph_fail "'ceph osd new' failed (is the mon in quorum?)" "$D/osd-new.err" "$D/mon.a.log"
    return 1
  fi
  _ceph_step "osd.0 registered"
  local mkfs_rc
  mkfs_rc=$(_ceph_wait_mkfs "$D")
  if [ "$mkfs_rc" != 0 ]; then
    _ceph_fail "ceph-osd --mkfs failed (exit $mkfs_rc)" "$D/osd-mkfs.log" "$D/osd.0.log"
    return 1
  fi
  _ceph_step "osd mkfs done"
  _ceph_spawn osd.0 ceph-osd "${C[@]}" -f -i 0 || { _ceph_fail "could not start ceph-osd" "$D/osd.0.out"; return 1; }
  _ceph_step "osd started"
  # Up = the OSD logs its boot (cheap to poll); `ceph osd stat` (a slower CLI call) every 2 s
  # as a fallback in case the log line ever changes.
  local i out up=
  for i in $(seq 600); do
    _ceph_alive "$(_ceph_pid osd.0)" || break
    if grep -q 'state: booting -> active' "$D/osd.0.log" 2>/dev/null; then
      up=1
      break
    fi
    if [ $((i % 20)) = 0 ]; then
      out=$(timeout 10 ceph "${C[@]}" --connect-timeout 5 osd stat -f json 2>/dev/null) || out=
      case "$out" in *'"num_up_osds":1'*) up=1; break ;; esac
    fi
    sleep 0.1
  done
  if [ -z "$up" ]; then
    if _ceph_alive "$(_ceph_pid osd.0)"; then
      _ceph_fail "osd.0 is not up after 60 s" "$D/osd.0.out" "$D/osd.0.log" "$D/mon.a.log"
    else
      _ceph_fail "ceph-osd exited during startup" "$D/osd.0.out" "$D/osd.0.log"
    fi
    return 1
  fi
  _ceph_step "osd up"

  # --- RGW (started once the OSD is up: started earlier, it waits longer in pool creation)
  _ceph_spawn client.rgw.a radosgw "${C[@]}" -f -n client.rgw.a ||
    { _ceph_fail "could not start radosgw" "$D/client.rgw.a.out"; return 1; }
  _ceph_step "rgw started"
  local endpoint=http://127.0.0.1:$rgw_port code=
  for i in $(seq 600); do
    _ceph_alive "$(_ceph_pid client.rgw.a)" || break
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$endpoint/" 2>/dev/null) || code=
    [ "$code" = 200 ] && break
    sleep 0.1
  done
  if [ "$code" != 200 ]; then
    if _ceph_alive "$(_ceph_pid client.rgw.a)"; then
      _ceph_fail "radosgw does not answer on $endpoint after 60 s (last HTTP status: ${code:-none})" \
        "$D/client.rgw.a.out" "$D/client.rgw.a.log"
    else
      _ceph_fail "radosgw exited during startup" "$D/client.rgw.a.out" "$D/client.rgw.a.log"
    fi
    return 1
  fi
  _ceph_step "rgw answers"

  # --- S3 user, then a signed request to prove the keys work (and the bucket, if asked for)
  local ak sk
  ak=$(od -An -N10 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F)
  sk=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')
  if ! radosgw-admin "${C[@]}" user create --uid=strata-ci --display-name="Strata CI" \
        --access-key="$ak" --secret-key="$sk" >"$D/user.log" 2>&1; then
    _ceph_fail "radosgw-admin user create failed" "$D/user.log" "$D/client.admin.log"
    return 1
  fi
  _ceph_step "user created"
  S3_ENDPOINT=$endpoint S3_ACCESS_KEY=$ak S3_SECRET_KEY=$sk S3_REGION=us-east-1
  export S3_ENDPOINT S3_ACCESS_KEY S3_SECRET_KEY S3_REGION CEPH_CONF=$D/ceph.conf
  for i in $(seq 20); do
    code=$(_ceph_s3 GET / "$D/s3.out") || code=
    [ "$code" = 200 ] && break
    sleep 0.25
  done
  if [ "$code" != 200 ]; then
    _ceph_fail "a signed ListBuckets gets HTTP ${code:-none}, not 200" "$D/s3.out" "$D/client.rgw.a.log"
    return 1
  fi
  if [ -n "$bucket" ]; then
    code=$(_ceph_s3 PUT "/$bucket" "$D/s3.out") || code=
    if [ "$code" != 200 ]; then
      _ceph_fail "creating bucket '$bucket' gets HTTP ${code:-none}, not 200" "$D/s3.out" "$D/client.rgw.a.log"
      return 1
    fi
    S3_BUCKET=$bucket
    export S3_BUCKET
  else
    unset S3_BUCKET
  fi
  _ceph_step "S3 ready"
  return 0
}

# Stops the daemons ceph_up started (RGW, then the OSD, then the mon): SIGTERM to each PID,
# SIGKILL to any still running after 10 s. Then removes the temp dir. A no-op when nothing is up, so
# it is safe to call twice or after a failed ceph_up. Returns non-zero only if a daemon could
# not be stopped or the dir not removed.
ceph_down() {
  local D=${CEPH_CI_DIR:-}
  if [ -z "$D" ]; then
    return 0
  fi
  _ceph_stop "$D" || return 1
  _ceph_remove "$D" || return 1
  unset CEPH_CI_DIR CEPH_CI_PIDS CEPH_CONF S3_ENDPOINT S3_ACCESS_KEY S3_SECRET_KEY S3_REGION S3_BUCKET
  return 0
}

# --- helpers (private) ---

# Starts NAME's daemon in the background (stdio to DIR/NAME.out) without making it a job of
# the calling shell (so a bare `wait` in the caller does not wait for it), and records its PID.
_ceph_spawn() {
  local name=$1 D=$CEPH_CI_DIR pid=
  shift
  ("$@" </dev/null >>"$D/$name.out" 2>&1 & echo "$!" >"$D/run/$name.spawned") || return 1
  pid=$(cat "$D/run/$name.spawned" 2>/dev/null) || return 1
  [ -n "$pid" ] || return 1
  echo "$name $pid" >>"$D/pids"
  CEPH_CI_PIDS=${CEPH_CI_PIDS:+$CEPH_CI_PIDS }$pid
  export CEPH_CI_PIDS
  return 0
}

# Waits for the OSD mkfs started by ceph_up to end (timeout 120 bounds it) and prints its exit
# status.
_ceph_wait_mkfs() {
  local _
  for _ in $(seq 1300); do
    if [ -s "$1/osd-mkfs.rc" ]; then
      cat "$1/osd-mkfs.rc"
      return 0
    fi
    sleep 0.1
  done
  echo "timeout"
}

# Prints the PID recorded for daemon NAME.
_ceph_pid() {
  awk -v n="$1" '$1 == n { print $2 }' "$CEPH_CI_DIR/pids" 2>/dev/null || true
}

# True if the process exists and is not a zombie.
_ceph_alive() {
  local pid=${1:-} state
  case "$pid" in '' | *[!0-9]*) return 1 ;; esac
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# True if PID runs with DIR's ceph.conf on its command line (guards against PID reuse).
_ceph_is_ours() {
  local cmd
  cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
  [[ $cmd == *"$2/ceph.conf"* ]]
}

_ceph_all_alive() {
  local n pid
  for n in mon.a osd.0 client.rgw.a; do
    pid=$(_ceph_pid "$n")
    _ceph_alive "$pid" || return 1
  done
  return 0
}

_ceph_port_busy() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Waits up to SECS for the mon of DIR to log that it leads a quorum (of one), while it lives.
# (Not "its port answers": that would also be true of another program on the port.)
_ceph_wait_mon() {
  local _
  for _ in $(seq $(($2 * 10))); do
    _ceph_alive "$(_ceph_pid mon.a)" || return 1
    if grep -q 'mon.a is new leader' "$1/mon.a.log" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# Sends a SigV4-signed S3 request with an empty body (curl's --aws-sigv4); prints the HTTP
# status and writes the response body to OUT.
_ceph_s3() {
  curl -s -o "$3" -w '%{http_code}' --max-time 10 -X "$1" \
    --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
    -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
    "$S3_ENDPOINT$2"
}

# With CEPH_CI_VERBOSE=1, prints how long ceph_up has taken so far.
_ceph_step() {
  if [ "${CEPH_CI_VERBOSE:-}" = 1 ]; then
    printf 'ceph_up: %6.2f s  %s\n' "$(_ceph_elapsed "${_ceph_t0:-$EPOCHREALTIME}")" "$1" >&2
  fi
  return 0
}

_ceph_elapsed() {
  local now=$EPOCHREALTIME
  awk -v a="$1" -v b="$now" 'BEGIN { printf "%.2f", b - a }'
}

# SIGTERM to those of the PIDs that are alive and ours; SIGKILL after SECS to any still alive.
_ceph_kill_wait() {
  local D=$1 secs=$2 pid live=()
  shift 2
  for pid in "$@"; do
    if _ceph_alive "$pid" && _ceph_is_ours "$pid" "$D"; then
      kill -TERM "$pid" 2>/dev/null || true
      live+=("$pid")
    fi
  done
  if [ "${#live[@]}" = 0 ] || _ceph_wait_dead $((secs * 10)) "${live[@]}"; then
    return 0
  fi
  for pid in "${live[@]}"; do
    if _ceph_alive "$pid"; then
      echo "ceph_down: PID $pid ($(cat "/proc/$pid/comm" 2>/dev/null)) ignored SIGTERM for ${secs} s; sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  _ceph_wait_dead 50 "${live[@]}"
}

# Waits up to N tenths of a second until none of the PIDs is alive.
_ceph_wait_dead() {
  local n=$1 i pid any
  shift
  for i in $(seq "$n"); do
    any=
    for pid in "$@"; do
      if _ceph_alive "$pid"; then any=1; fi
    done
    [ -n "$any" ] || return 0
    sleep 0.1
  done
  return 1
}

# Stops every daemon recorded for DIR (or, if DIR/pids is gone, those in $CEPH_CI_PIDS), one
# at a time: RGW, then the OSD, then the mon. (RGW stopped together with the OSD can hang in
# its shutdown for its full 120 s alarm, waiting on RADOS.) Then waits up to 3 s for the
# exited daemons, re-parented to PID 1, to be reaped, so that `pgrep` no longer lists them.
_ceph_stop() {
  local D=$1 rgw='' osd='' mon='' rc=0 pid i
  if [ -f "$D/pids" ]; then
    rgw=$(CEPH_CI_DIR=$D _ceph_pid client.rgw.a)
    osd=$(CEPH_CI_DIR=$D _ceph_pid osd.0)
    mon=$(CEPH_CI_DIR=$D _ceph_pid mon.a)
  else
    read -r mon osd rgw <<<"${CEPH_CI_PIDS:-}" || true
  fi
  for pid in "$rgw" "$osd" "$mon"; do
    [ -n "$pid" ] || continue
    _ceph_kill_wait "$D" 10 "$pid" || rc=1
  done
  if [ "$rc" != 0 ]; then
    echo "ceph_down: a Ceph daemon (PIDs $mon $osd $rgw) survived SIGKILL; leaving $D in place" >&2
    return 1
  fi
  for i in $(seq 30); do
    [ -e "/proc/${mon:-x}" ] || [ -e "/proc/${osd:-x}" ] || [ -e "/proc/${rgw:-x}" ] || break
    sleep 0.1
  done
  return 0
}

# Removes DIR, but only if it carries the marker ceph_up puts there.
_ceph_remove() {
  local D=$1
  [ -d "$D" ] || return 0
  if [ ! -f "$D/.strata-ci-ceph" ]; then
    echo "ceph_down: $D has no .strata-ci-ceph marker; not removing it" >&2
    return 1
  fi
  rm -rf "$D" || { echo "ceph_down: could not remove $D" >&2; return 1; }
  return 0
}

# Prints the end of a log. For a daemon's *.log: its last 15 records (RocksDB statistics
# dumps left out), preceded by its last errors (Ceph logs them at level -1) that are older
# than those. For any other file: its last 15 lines.
_ceph_show_log() {
  local f=$1 recent older
  [ -s "$f" ] || return 0
  case "$f" in
    */mon.a.log | */osd.0.log | */client.rgw.a.log | */client.admin.log)
      recent=$(grep -a -E '^[0-9]{4}-[0-9]{2}-[0-9]{2}T' "$f" | tail -n 15) || true
      older=$(grep -a -E '^[^ ]+ [0-9a-f]+ +-1 ' "$f" | grep -a -v -x -F -e "$recent" | tail -n 8) || true
      if [ -n "$older" ]; then
        echo "--- earlier errors in $f ---"
        echo "$older"
      fi
      echo "--- last lines of $f ---"
      echo "$recent"
      ;;
    *)
      echo "--- last lines of $f ---"
      tail -n 15 "$f"
      ;;
  esac
  return 0
}

# Prints the message and the tails of the given logs, then stops what ceph_up started and
# removes its temp dir (kept, with the daemons stopped, when CEPH_CI_KEEP=1).
_ceph_fail() {
  local msg=$1 f D=${CEPH_CI_DIR:-}
  shift
  echo "ceph_up: $msg" >&2
  for f in "$@"; do
    _ceph_show_log "$f" >&2
  done
  [ -n "$D" ] || return 0
  _ceph_stop "$D" || return 0
  if [ "${CEPH_CI_KEEP:-}" = 1 ]; then
    echo "ceph_up: kept $D (CEPH_CI_KEEP=1); remove it with: rm -rf $D" >&2
  else
    _ceph_remove "$D" || return 0
  fi
  unset CEPH_CI_DIR CEPH_CI_PIDS CEPH_CONF S3_ENDPOINT S3_ACCESS_KEY S3_SECRET_KEY S3_REGION S3_BUCKET
  return 0
}
