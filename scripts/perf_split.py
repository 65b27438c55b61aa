#!/usr/bin/env python3
"""Splits a system-wide `perf record` of a benchmark run by who spent the CPU.

Reads `perf script -F pid,tid,comm,time` output on stdin (scripts/profile.sh
feeds it) and, for each server the bench started (wspipe, websocketd), takes
the time window in which that server's process was sampled and counts, in
that window, the samples of:

  server    the server process itself (all its threads);
  child     processes that exec'd the session program (any comm other than
            those below), plus the spawned children before their exec (they
            still carry the server's thread name, under another pid);
  client    the bench process (wspipe-bench);
  idle      the idle task (swapper);
  other     everything else (kernel threads, perf).

With --per N it prints microseconds of CPU per unit of work instead (N units
per server: sessions for churn, round trips for latency), from the sampling
frequency given with --freq.
"""

import argparse
import collections
import sys

SERVER_COMMS = {"wspipe": ("wspipe", "tokio-rt-worker"), "websocketd": ("websocketd",)}
OTHER = ("wspipe-bench", "perf", "kdamond", "kworker", "ksoftirqd", "migration", "rcu_", "memfd:")


def parse(lines):
    """Yields (time, pid, comm) per sample."""
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        try:
            time = float(parts[-1].rstrip(":"))
            pid = int(parts[-2].split("/")[0])
        except ValueError:
            continue
        yield time, pid, " ".join(parts[:-2])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--freq", type=float, required=True, help="perf -F value")
    ap.add_argument("--per", type=int, default=0, help="units of work per server")
    args = ap.parse_args()
    samples = list(parse(sys.stdin))
    by_pid = collections.Counter((pid, comm) for _, pid, comm in samples)

    # Each server's main process: the pid with the most samples under the
    # server's own comm names, among processes that ran the server binary.
    # The bench: the process with the most samples named wspipe-bench (the
    # servers it forks carry that name for a moment too, before their exec).
    named = collections.Counter()
    for (pid, comm), n in by_pid.items():
        if comm == "wspipe-bench":
            named[pid] += n
    bench = {named.most_common(1)[0][0]} if named else set()
    servers = {}
    for name, comms in SERVER_COMMS.items():
        mains = {pid for (pid, comm), _ in by_pid.items() if comm == comms[0]}
        best = max(
            (p for p in mains if p not in bench),
            key=lambda p: sum(n for (q, c), n in by_pid.items() if q == p),
            default=None,
        )
        if best is not None:
            servers[name] = (best, comms)

    print(f"| server | window (s) | {' | '.join(COLUMNS)} |")
    print(f"|---|---:|{'---:|' * len(COLUMNS)}")
    for name, (pid, comms) in servers.items():
        times = [t for t, p, _ in samples if p == pid]
        start, end = min(times), max(times)
        split = collections.Counter()
        for t, p, comm in samples:
            if start <= t <= end:
                split[classify(p, comm, pid, comms, bench)] += 1
        cells = []
        for col in COLUMNS:
            n = split[col]
            if args.per:
                cells.append(f"{n / args.freq / args.per * 1e6:,.0f} µs")
            else:
                cells.append(f"{n / args.freq:.2f} s")
        print(f"| {name} (pid {pid}) | {end - start:.2f} | {' | '.join(cells)} |")
    if args.per:
        print(f"\nCPU per unit of work ({args.per} per server), from {args.freq:g} Hz "
              "samples; idle: CPU time nobody used, per unit.")


COLUMNS = ("server", "child", "client", "idle", "other")


def classify(pid, comm, server_pid, server_comms, bench):
    if pid == server_pid:
        return "server"
    if pid in bench:
        return "client"
    if comm == "swapper":
        return "idle"
    if comm in server_comms:
        return "child"  # spawned, not yet exec'd: still the server's name
    if comm.startswith(OTHER) or comm in SERVER_COMMS or comm.startswith("tokio"):
        return "other"
    return "child"


if __name__ == "__main__":
    main()
