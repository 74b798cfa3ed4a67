#!/usr/bin/env bash
# Upload and download throughput of the `strata` client against coldsnap's, in the same
# run, on the same server and image (issue 13, "Throughput"): a 1 GiB image with half its
# blocks random and half zero (alternating runs of 16 blocks), uploaded and downloaded
# ROUNDS times (default 3) by each tool in turn, alternating which goes first. Prints one
# line per transfer and the medians with the ratio strata / coldsnap. strata's download is
# durable when it exits (fsync), coldsnap's is not: a third row adds a `sync` of coldsnap's
# output to its time.
#
#   cargo build --release -p strata && bash scripts/bench-client-vs-coldsnap.sh
#
# Needs coldsnap on PATH (`cargo install --locked coldsnap`). Starts its own release
# `strata serve` on 127.0.0.1 (a free port below 32768) on a temporary data directory, and
# stops it (by PID) when done. STRATA_BIN chooses another binary, ROUNDS the repeats,
# WORK_DIR where the image and the data directory go (default: a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
strata=${STRATA_BIN:-target/release/strata}
rounds=${ROUNDS:-3}
command -v coldsnap >/dev/null || { echo "coldsnap is not on PATH (cargo install --locked coldsnap)" >&2; exit 2; }
[ -x "$strata" ] || { echo "$strata is missing: cargo build --release -p strata" >&2; exit 2; }

work=$(mktemp -d "${WORK_DIR:-${TMPDIR:-/tmp}}/strata-vs-coldsnap.XXXXXX")
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

export AWS_ACCESS_KEY_ID=AKIDBENCHCLIENT AWS_SECRET_ACCESS_KEY=bench-client-secret
export AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null

# The image: 2048 blocks of 512 KiB; runs of 16 random blocks alternate with 16 zero ones.
# A new one before every upload, so no upload finds its content stored already.
image=$work/disk.img
new_image() {
  python3 - "$image" <<'PY'
import os, sys
block = 512 * 1024
with open(sys.argv[1], "wb") as f:
    for run in range(2048 // 16):
        if run % 2 == 0:
            f.write(os.urandom(16 * block))
        else:
            f.write(bytes(16 * block))
PY
  sync "$image"
}

port=$(python3 -c 'import random, socket
for _ in range(100):
    p = random.randint(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); print(p); break
    except OSError: pass
    finally: s.close()')
endpoint=http://127.0.0.1:$port
STRATA_ROOT_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID STRATA_ROOT_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY \
  RUST_LOG=warn "$strata" serve --listen "127.0.0.1:$port" --data-dir "$work/data" >"$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
  grep -q serving "$work/serve.log" 2>/dev/null && break
  sleep 0.1
done
grep -q serving "$work/serve.log" || { cat "$work/serve.log" >&2; exit 1; }

# Seconds a command took (it must succeed); its stdout goes to $work/out.
timed() {
  local started ended
  started=$(date +%s.%N)
  "$@" >"$work/out" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  ended=$(date +%s.%N)
  python3 -c "print(f'{$ended - $started:.3f}')"
}
results=$work/results
: >"$results"
run_strata() {
  local up down snapshot
  new_image
  up=$(timed "$strata" upload "$image" --endpoint "$endpoint" --quiet)
  snapshot=$(tr -d '[:space:]' <"$work/out")
  down=$(timed "$strata" download "$snapshot" "$work/strata.out" --endpoint "$endpoint" --quiet --force)
  cmp -s "$image" "$work/strata.out" || { echo "strata download differs" >&2; exit 1; }
  rm -f "$work/strata.out"
  echo "strata upload $up" >>"$results"; echo "strata download $down" >>"$results"
  echo "round $1: strata   upload ${up} s, download ${down} s"
}
run_coldsnap() {
  local up down snapshot
  new_image
  up=$(timed coldsnap --endpoint "$endpoint" upload "$image")
  snapshot=$(grep -o 'snap-[0-9a-f]*' "$work/out" | tail -n 1)
  down=$(timed coldsnap --endpoint "$endpoint" download "$snapshot" "$work/coldsnap.out")
  # strata's download is durable when it returns (fsync); coldsnap's is not: the time to
  # make it so is reported beside it.
  synced=$(timed sync "$work/coldsnap.out")
  echo "coldsnap download+sync $(python3 -c "print(f'{$down + $synced:.3f}')")" >>"$results"
  cmp -s "$image" "$work/coldsnap.out" || { echo "coldsnap download differs" >&2; exit 1; }
  rm -f "$work/coldsnap.out"
  echo "coldsnap upload $up" >>"$results"; echo "coldsnap download $down" >>"$results"
  echo "round $1: coldsnap upload ${up} s, download ${down} s"
}
# The first round warms both up and is not counted.
run_strata 0 >/dev/null; run_coldsnap 0 >/dev/null; : >"$results"
for round in $(seq "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then run_strata "$round"; run_coldsnap "$round"; else run_coldsnap "$round"; run_strata "$round"; fi
done

python3 - "$results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
mib = 1024.0
def median(tool, op):
    return statistics.median(float(s) for t, o, s in rows if t == tool and o == op)
print()
print("| transfer (1 GiB, half random, half zero) | strata | coldsnap | strata / coldsnap |")
print("|---|---|---|---|")
for op in ("upload", "download", "download+sync"):
    s, c = median("strata", op.split("+")[0]), median("coldsnap", op)
    print(f"| {op} | {s:.2f} s ({mib / s:.0f} MiB/s) | {c:.2f} s ({mib / c:.0f} MiB/s) | {c / s:.2f}x |")
PY
