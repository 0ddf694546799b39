"""Throughput of sandbox.execute on a trivial program, and its overhead over a bare interpreter start.

Measures, for a program that does nothing (`pass`):
1. bare:       `python -c pass` via subprocess.run, sequential (the floor: one interpreter start);
2. sequential: sandbox.execute one after another;
3. parallel:   sandbox.execute from a thread pool of --workers threads (how code_reward runs tests).

    python -m benchmarks.bench_sandbox                     # 40 programs per measurement, 2 workers
    python -m benchmarks.bench_sandbox --n 100 --workers 4 --backend unshare
"""

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from reasonrl.sandbox import runner as sandbox


def timed(fn, n, workers=1):
    start = time.perf_counter()
    if workers == 1:
        for _ in range(n):
            fn()
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda _: fn(), range(n)))
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=40, help="programs per measurement")
    p.add_argument("--workers", type=int, default=2, help="threads for the parallel measurement")
    p.add_argument("--backend", default=None, help="bwrap | unshare (default: strongest available)")
    args = p.parse_args()

    backend = args.backend or sandbox.choose_backend()
    if backend is None:
        sys.exit("no sandbox backend: run scripts/install_sandbox_deps.sh")

    def run_sandboxed():
        r = sandbox.execute("pass", backend=backend)
        assert r.returncode == 0, r

    run_sandboxed()  # warm up (probe, page cache)
    bare = timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), args.n)
    seq = timed(run_sandboxed, args.n)
    par = timed(run_sandboxed, args.n, args.workers)
    print(f"backend={backend} n={args.n} cpus={len(__import__('os').sched_getaffinity(0))}")
    print(f"bare python -c pass : {1000 * bare / args.n:7.1f} ms/program  {args.n / bare:6.1f} programs/s")
    print(f"sandbox sequential  : {1000 * seq / args.n:7.1f} ms/program  {args.n / seq:6.1f} programs/s")
    print(f"sandbox {args.workers} workers   : {1000 * par / args.n:7.1f} ms/program  {args.n / par:6.1f} programs/s")
    print(f"sandbox overhead    : {1000 * (seq - bare) / args.n:7.1f} ms/program over a bare interpreter start")


if __name__ == "__main__":
    main()
