"""Studies per minute of ``brats-seg predict`` over real cases: one process against a local Dask cluster.

    python benchmarks/bench_cluster.py                 # the first 8 BraTS cases of ../shared/data/brats
    python benchmarks/bench_cluster.py --cases 0       # all of them (23)
    python benchmarks/bench_cluster.py --workers 2 --model model/ --no-tta   # extra flags go to predict

Each run is the whole command in a new process, as a user runs it (imports, model loads, the cluster's
start, writing): first one case to fill the OpenVINO cache (not timed), then the cases without a cluster
(torch's default threads: one per core), then with ``--workers N`` (one thread per worker). Prints a
Markdown table: wall time, studies per minute, the model loads of each worker (from the command's closing
line: it counts the model objects each worker's studies used; 1 each means each loaded it once), and
how many label maps are identical between the two runs, voxel for voxel.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT / ".." / "shared" / "data" / "brats").resolve()


def predict(data: Path, out: Path, extra: list[str]) -> tuple[float, str]:
    """Run ``brats-seg predict DATA --output OUT EXTRA`` in a new process; its wall time and stdout."""
    command = [sys.executable, "-m", "brats_seg.cli", "predict", str(data), "--output", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    result = subprocess.run([*command, "--no-progress", *extra], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return seconds, result.stdout


def identical(a: Path, b: Path) -> tuple[int, int]:
    """How many ``*_seg.nii.gz`` of ``a`` have the same voxels and affine in ``b``; and how many there are."""
    same = files = 0
    for path in sorted(a.glob("*_seg.nii.gz")):
        files += 1
        x, y = nib.load(path), nib.load(b / path.name)
        same += bool(
            np.asarray(x.dataobj).tobytes() == np.asarray(y.dataobj).tobytes()
            and x.affine.tobytes() == y.affine.tobytes()
        )
    return same, files


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=DATA, help="folder of case folders (default: %(default)s)"
    )
    parser.add_argument("--cases", type=int, default=8, help="the first N cases, 0 for all (default: 8)")
    parser.add_argument("--workers", type=int, default=2, help="local Dask workers (default: 2)")
    args, extra = parser.parse_known_args()
    cases = sorted(p for p in args.data.iterdir() if p.is_dir() and not p.name.startswith("."))
    cases = cases[: args.cases or None]
    with tempfile.TemporaryDirectory(prefix="bench_cluster_") as tmp:
        root = Path(tmp)
        (root / "data").mkdir()
        for case in cases:
            (root / "data" / case.name).symlink_to(case)
        predict(cases[0], root / "warm", extra)  # the OpenVINO cache filled, for both runs alike
        alone, _ = predict(root / "data", root / "alone", extra)
        workers, out = predict(root / "data", root / "dask", [*extra, "--workers", str(args.workers)])
        closing = out.strip().splitlines()[-1]
        loads = re.search(r"model loads per worker: ([\d, ]+)\)$", closing)
        same, files = identical(root / "alone", root / "dask")
    n = len(cases)
    print(
        f"{n} cases of {args.data}, predict {' '.join(extra) or '(defaults)'}; {os.cpu_count()} CPU cores\n"
    )
    print("| run | wall (s) | studies per minute | model loads per worker |")
    print("|---|---|---|---|")
    print(f"| one process (torch threads: one per core) | {alone:.1f} | {60 * n / alone:.2f} | n/a |")
    shown = loads.group(1) if loads else f"not found in {closing!r}"
    print(
        f"| --workers {args.workers} (one thread each) | {workers:.1f} | {60 * n / workers:.2f} | {shown} |"
    )
    print(f"\nidentical label maps (voxels and affine), one process vs the cluster: {same} of {files}")
    print(f"cluster's closing line: {closing}")


if __name__ == "__main__":
    main()
