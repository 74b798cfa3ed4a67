#!/usr/bin/env bash
# A short run of every cargo-fuzz target in fuzz/ (issue 12, "Fuzzing"): installs cargo-fuzz
# when it is missing, checks the fuzz crate's formatting and lints, builds every target
# (AddressSanitizer, libFuzzer), then runs each for at most FUZZ_SECONDS (default 20) and
# FUZZ_RUNS executions (default 5,000,000), whichever comes first. The committed seeds in
# fuzz/corpus/<target>/ are read; what the run finds goes to a temporary directory, so the
# committed corpus never changes here. Prints libFuzzer's closing line of each target
# ("Done N runs in S second(s)") and fails if any target crashed, leaked, timed out on an
# input (FUZZ_INPUT_TIMEOUT, default 10 s) or did not run. FUZZ_JOBS targets run at once
# (default: one per core). A crashing input is kept in fuzz/artifacts/<target>/; see
# fuzz/README.md to reproduce it.
#
# Longer runs by hand: `FUZZ_SECONDS=600 bash ci/fuzz.sh`, or one target as fuzz/README.md
# shows.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
export PATH="$HOME/.cargo/bin:$PATH"
# cargo-fuzz passes nightly -Z flags (-Zsanitizer=address, coverage instrumentation); this
# lets the machine's one stable toolchain accept them.
export RUSTC_BOOTSTRAP=1

seconds=${FUZZ_SECONDS:-20}
runs=${FUZZ_RUNS:-5000000}
input_timeout=${FUZZ_INPUT_TIMEOUT:-10}
# Targets run side by side, one per core (each is single-threaded).
jobs=${FUZZ_JOBS:-$(nproc)}
# The version these targets were written against; a newer one already installed is used.
cargo_fuzz_version=0.13.2

echo "== cargo-fuzz"
# libfuzzer-sys compiles libFuzzer (C++) with the machine's C++ compiler.
if ! command -v c++ >/dev/null; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q g++ >/dev/null
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  started=$SECONDS
  cargo install --locked --quiet cargo-fuzz --version "$cargo_fuzz_version"
  echo "installed cargo-fuzz $cargo_fuzz_version in $((SECONDS - started)) s"
fi
cargo fuzz --version

echo "== the fuzz crate's format and lints"
manifest=fuzz/Cargo.toml
cargo fmt --manifest-path "$manifest" -- --check
# --locked: fuzz/Cargo.lock is committed and must already name every dependency.
cargo clippy --manifest-path "$manifest" --locked --all-targets -- -D warnings

echo "== build (AddressSanitizer)"
started=$SECONDS
# cargo-fuzz has no --locked of its own; the clippy run above already refused a stale lock.
cargo fuzz build
echo "built in $((SECONDS - started)) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mapfile -t targets < <(cargo fuzz list)
if [ "${#targets[@]}" -eq 0 ]; then
  echo "no fuzz targets found" >&2
  exit 1
fi

echo "== run: ${#targets[@]} targets, at most ${seconds} s or ${runs} runs each, ${jobs} at a time"
# One target's run; its exit status goes to a file, since it runs in the background.
run_target() {
  local target=$1 status=0
  # The first corpus directory is where libFuzzer writes new inputs; the seeds are only read.
  cargo fuzz run "$target" "$work/corpus/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -runs="$runs" -timeout="$input_timeout" \
    >"$work/$target.log" 2>&1 || status=$?
  echo "$status" >"$work/$target.status"
}
started=$SECONDS
running=0
for target in "${targets[@]}"; do
  seeds=fuzz/corpus/$target
  if [ ! -d "$seeds" ] || [ -z "$(ls -A "$seeds")" ]; then
    echo "fuzz target $target has no seeds in $seeds" >&2
    echo "no seeds" >"$work/$target.status"
    continue
  fi
  mkdir -p "$work/corpus/$target"
  run_target "$target" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    # A failed target is reported below, from its status file; do not let set -e stop here.
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true
echo "ran for $((SECONDS - started)) s"

echo "== fuzzing summary"
failed=()
for target in "${targets[@]}"; do
  status=$(cat "$work/$target.status" 2>/dev/null || echo "no status")
  done_line=$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$work/$target.log" 2>/dev/null | tail -n 1 || true)
  if [ "$status" != 0 ] || [ -z "$done_line" ]; then
    echo "fuzz target $target FAILED ($status); the end of its log:"
    tail -n 80 "$work/$target.log" 2>/dev/null || true
    failed+=("$target")
  fi
done
for target in "${targets[@]}"; do
  done_line=$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$work/$target.log" 2>/dev/null | tail -n 1 || true)
  printf '%-18s %s\n' "$target" "${done_line:-FAILED}"
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzzing failed: ${failed[*]}" >&2
  exit 1
fi
