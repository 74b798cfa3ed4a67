#!/usr/bin/env bash
# ci/engines-selftest.sh [RUNS]: checks ci/postgres.sh and ci/ceph-rgw.sh end to end.
#
# Each run: pg_install + pg_up, SQL through $DATABASE_URL; ceph_install + ceph_up, an S3
# round trip with boto3 (bucket, 512 KiB object, a create-only PUT (If-None-Match: *) twice,
# the second refused with 412, get + compare, list, delete); ceph_down + pg_down, then checks
# that every daemon's PID is gone, the ports are free and the temp dirs are removed. Prints one
# summary line per run. RUNS (default 1) repeats the whole cycle, to show that re-runs work.
# Exit status 0 only if every run passed.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=ci/postgres.sh
source ci/postgres.sh
# shellcheck source=ci/ceph-rgw.sh
source ci/ceph-rgw.sh
trap 'ceph_down || true; pg_down || true' EXIT

runs=${1:-1}
case "$runs" in '' | *[!0-9]* | 0) echo "usage: $0 [RUNS]" >&2; exit 2 ;; esac

fail() {
  echo "engines-selftest: FAILED: $*" >&2
  exit 1
}

# Seconds between two $EPOCHREALTIME values, one decimal.
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

export PATH="$HOME/.local/bin:$PATH"
if ! python3 -c 'import boto3' 2>/dev/null; then
  echo "engines-selftest: installing boto3 (pip --user)" >&2
  python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages boto3 ||
    fail "could not install boto3"
fi

s3_round_trip() {
  python3 - <<'PY'
import hashlib, os, sys, uuid
import boto3
from botocore.client import Config
from botocore.exceptions import ClientError

s3 = boto3.client(
    "s3",
    endpoint_url=os.environ["S3_ENDPOINT"],
    aws_access_key_id=os.environ["S3_ACCESS_KEY"],
    aws_secret_access_key=os.environ["S3_SECRET_KEY"],
    region_name=os.environ["S3_REGION"],
    config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                  retries={"max_attempts": 1}),
)
s3.head_bucket(Bucket=os.environ["S3_BUCKET"])      # the bucket ceph_up created
bucket = "selftest-" + uuid.uuid4().hex[:12]
s3.create_bucket(Bucket=bucket)
body = os.urandom(512 * 1024)
s3.put_object(Bucket=bucket, Key="plain", Body=body)
s3.put_object(Bucket=bucket, Key="once", Body=body, IfNoneMatch="*")
try:
    s3.put_object(Bucket=bucket, Key="once", Body=b"second", IfNoneMatch="*")
    sys.exit("the second If-None-Match: * PUT was accepted; expected 412")
except ClientError as e:
    status = e.response["ResponseMetadata"]["HTTPStatusCode"]
    if status != 412:
        sys.exit(f"the second If-None-Match: * PUT got HTTP {status}; expected 412")
for key in ("plain", "once"):
    got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    if hashlib.sha256(got).digest() != hashlib.sha256(body).digest():
        sys.exit(f"GET {key}: {len(got)} bytes that differ from the {len(body)} put")
keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))
if keys != ["once", "plain"]:
    sys.exit(f"list: {keys}")
for key in keys:
    s3.delete_object(Bucket=bucket, Key=key)
if s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) != 0:
    sys.exit("objects left after delete")
s3.delete_bucket(Bucket=bucket)
PY
}

sql_round_trip() {
  local out
  out=$("$PG_CI_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d "$DATABASE_URL" \
    -c 'CREATE TABLE selftest (k bigint PRIMARY KEY, v bytea NOT NULL)' \
    -c "INSERT INTO selftest SELECT g, sha256(g::text::bytea) FROM generate_series(1, 1000) g" \
    -c 'SELECT count(*), current_user, current_database() FROM selftest' \
    -c 'SHOW fsync' -c 'SHOW synchronous_commit' \
    -c 'DROP TABLE selftest')
  [ "$out" = "$(printf '1000|strata|strata\non\non')" ] || { echo "unexpected psql output: $out" >&2; return 1; }
}

# True if no process with any of the PIDs exists any more (not even a zombie).
all_gone() {
  local pid
  for pid in "$@"; do
    [ ! -e "/proc/$pid" ] || return 1
  done
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

status=0
for run in $(seq "$runs"); do
  t0=$EPOCHREALTIME
  pg_install || fail "pg_install"
  t1=$EPOCHREALTIME
  pg_up || fail "pg_up"
  t2=$EPOCHREALTIME
  sql_round_trip || fail "SQL round trip through \$DATABASE_URL"
  t3=$EPOCHREALTIME
  ceph_install || fail "ceph_install"
  t4=$EPOCHREALTIME
  ceph_up || fail "ceph_up"
  t5=$EPOCHREALTIME
  s3_round_trip || fail "S3 round trip against $S3_ENDPOINT"
  t6=$EPOCHREALTIME

  pg_dir=$PG_CI_DIR pg_pid=$PG_CI_PID ceph_dir=$CEPH_CI_DIR ceph_pids=$CEPH_CI_PIDS
  ceph_down || fail "ceph_down"
  t7=$EPOCHREALTIME
  pg_down || fail "pg_down"
  t8=$EPOCHREALTIME
  if ! ceph_down || ! pg_down; then
    fail "a second ceph_down/pg_down (must be a no-op)"
  fi

  left=
  # shellcheck disable=SC2086 # ceph_pids is a list
  all_gone $ceph_pids || left+=" ceph PIDs: $ceph_pids;"
  all_gone "$pg_pid" || left+=" postgres PID $pg_pid;"
  [ ! -e "$ceph_dir" ] || left+=" $ceph_dir;"
  [ ! -e "$pg_dir" ] || left+=" $pg_dir;"
  for port in "$PG_CI_PORT" "$CEPH_CI_MON_PORT" "$CEPH_CI_RGW_PORT"; do
    port_free "$port" || left+=" port $port still listening;"
  done
  if [ -n "$left" ]; then
    echo "engines-selftest: run $run/$runs: left behind:$left" >&2
    status=1
  fi

  printf 'engines-selftest: run %s/%s %s: postgres up %ss down %ss (install check %ss), SQL ok; ceph up %ss down %ss (install check %ss), S3 round trip ok (512 KiB, If-None-Match 412); %ss in all\n' \
    "$run" "$runs" "$([ -z "$left" ] && echo OK || echo FAILED)" \
    "$(secs "$t1" "$t2")" "$(secs "$t7" "$t8")" "$(secs "$t0" "$t1")" \
    "$(secs "$t4" "$t5")" "$(secs "$t6" "$t7")" "$(secs "$t3" "$t4")" "$(secs "$t0" "$t8")"
done
exit "$status"
