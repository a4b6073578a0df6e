"""Time and memory of harmonising a raw study (co-register, skull-strip, resample), step by step.

    python benchmarks/bench_harmonise.py                          # the real raw study TCGA-FG-6692, 3 runs
    python benchmarks/bench_harmonise.py STUDY_DIR --runs 5 --threads 2

Each run is a new process (``brats_seg.harmonise.harmonise`` after ``load_native_study``), so that the
peak resident memory is that of one harmonisation with its imports (torch, SimpleITK, deepbet's
network). Prints each run's steps and the median of each step over the runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

RAW = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "raw" / "TCGA-FG-6692"

CHILD = """
import json, resource, sys, time
import torch
torch.set_num_threads(int(sys.argv[2]))
t0 = time.perf_counter()
from brats_seg import files, harmonise
t_import = time.perf_counter() - t0
t1 = time.perf_counter()
raw = files.load_native_study(sys.argv[1])
t_load = time.perf_counter() - t1
result = harmonise.harmonise(raw, reasons=harmonise.decide(raw))
steps = {"import": round(t_import, 2), "load": round(t_load, 2), **result.timings}
print(json.dumps({"steps": steps, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "study", nargs="?", type=Path, default=RAW, help="a raw study folder (default: %(default)s)"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs, each a new process (default: 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    args = parser.parse_args(argv)
    if not args.study.is_dir():
        print(f"{args.study}: not found", file=sys.stderr)
        return 2
    runs = []
    for n in range(args.runs):
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(args.study), str(args.threads)],
            check=True,
            capture_output=True,
            text=True,
        )
        run = json.loads(done.stdout.strip().splitlines()[-1])
        runs.append(run)
        print(
            f"run {n + 1}: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in run["steps"].items())
            + f"; peak RSS {run['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    steps = runs[0]["steps"]
    print(
        "median: "
        + ", ".join(f"{k} {statistics.median(r['steps'][k] for r in runs):.2f} s" for k in steps)
        + f"; peak RSS {max(r['peak_rss_mb'] for r in runs):.0f} MB (highest)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
