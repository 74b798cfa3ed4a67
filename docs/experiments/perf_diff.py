#!/usr/bin/env python3
"""Per-operation CPU difference between two `perf record` profiles of `strata bench`.

Each profile is turned into microseconds of CPU per operation per (thread kind, symbol):
share of samples x cores in use / operations per second. Thread kinds: `bench-server`
(tokio workers and blocking threads of the server runtime), `bench-client`, and
`srv-thread` (Strata's own threads: the chunk committer and the metadata writer).

    perf_diff.py A.data CORES_A OPS_A B.data CORES_B OPS_B [ROWS]

CORES is client_cpu + server_cpu of that run's `summary` line, OPS its ops_s. Prints the
totals, then the rows where A costs most over B. See docs/performance.md.
"""

import re
import subprocess
import sys

LINE = re.compile(r"\s*([\d.]+)%\s+(\S+)\s+(\S+)\s+\[(.)\]\s+(.*)")


def load(path, cores, ops):
    report = subprocess.run(
        ["perf", "report", "-i", path, "--no-children", "--sort", "comm,dso,sym", "-g", "none"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    per_op = {}
    micros_per_percent = cores / ops * 1e6 / 100
    for line in report.splitlines():
        match = LINE.match(line)
        if not match:
            continue
        share, comm, _dso, _kind, symbol = match.groups()
        if comm.startswith("strata-"):
            comm = "srv-thread"
        key = (comm, symbol.strip()[:70])
        per_op[key] = per_op.get(key, 0.0) + float(share) * micros_per_percent
    return per_op


def main():
    if len(sys.argv) < 7:
        sys.exit(__doc__)
    a = load(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]))
    b = load(sys.argv[4], float(sys.argv[5]), float(sys.argv[6]))
    rows = int(sys.argv[7]) if len(sys.argv) > 7 else 40
    print(f"total us/op: A {sum(a.values()):.1f}  B {sum(b.values()):.1f}")
    for comm in ("bench-server", "bench-client", "srv-thread"):
        in_a = sum(v for k, v in a.items() if k[0] == comm)
        in_b = sum(v for k, v in b.items() if k[0] == comm)
        print(f"  {comm:13} A {in_a:7.1f}  B {in_b:7.1f}")
    keys = sorted(set(a) | set(b), key=lambda k: b.get(k, 0.0) - a.get(k, 0.0))
    print(f"{'A':>8} {'B':>8} {'A-B':>8}  thread symbol")
    for key in keys[:rows]:
        print(f"{a.get(key, 0):8.2f} {b.get(key, 0):8.2f} {a.get(key, 0) - b.get(key, 0):8.2f}  {key[0]} {key[1]}")


if __name__ == "__main__":
    main()
