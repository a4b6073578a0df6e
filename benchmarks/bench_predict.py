"""Wall time and peak memory of ``brats-seg predict`` on real cases, as a user runs it (a new process).

    python benchmarks/bench_predict.py                       # the demo case and one BraTS 2018 case
    python benchmarks/bench_predict.py --model model/ --tta  # extra flags go to brats-seg predict

Prints one line per case: wall time of the whole command (imports, model load, inference, writing),
the pipeline's own timings from the report, and the peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
DEFAULT_CASES = [SHARED / "brats" / "Brats18_CBICA_ABM_1", SHARED / "demo" / "BraTS-GLI-00001-000"]


def run_case(case: Path, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as out:
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        cmd = [
            sys.executable,
            "-m",
            "brats_seg.cli",
            "predict",
            str(case),
            "--output",
            out,
            "--no-progress",
            *extra,
        ]
        subprocess.run(cmd, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        peak_mb = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before) / 1024
        report = json.loads(next(Path(out).glob("*_report.json")).read_text())
    return {"case": case.name, "wall_s": wall, "peak_rss_mb": peak_mb, "timings": report["timings_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("cases", nargs="*", type=Path, default=DEFAULT_CASES, help="study folders")
    args, extra = parser.parse_known_args()
    for case in args.cases:
        r = run_case(case, extra)
        t = r["timings"]
        print(
            f"{r['case']}: wall {r['wall_s']:.1f} s (load {t['load']:.2f} s, prepare {t['prepare']:.2f} s, "
            f"predict {t['predict']:.2f} s, postprocess {t['postprocess']:.2f} s), "
            f"peak RSS {r['peak_rss_mb']:.0f} MB"
        )


if __name__ == "__main__":
    main()
