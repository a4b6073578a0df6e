"""How fast one prediction is, stage by stage, for the default and the faster variants, and what each
costs in Dice.

    python benchmarks/bench_speed.py          # 2 real cases, all variants, 1 and 2 threads
    python benchmarks/bench_speed.py --variants torch openvino --threads 2 --runs 5 --cases CASE_DIR

Each (variant, threads, case) runs in a fresh process, so that its peak memory is its own: it loads the
model (its networks already converted, as after a first start), reads the study, predicts once to warm
up, then ``--runs`` times with ``brats_seg.pipeline.segment`` and writes the outputs as
``brats-seg predict`` does. Printed per row: the median seconds of each stage (read the study, prepare,
networks, restore + decode + volume range, write the files) and of the whole prediction (prepare to
labels), the peak resident memory and what stays resident after the predictions, the networks' GFLOP
per prediction and the GFLOP/s they reached, as a fraction of what one plain 3-D convolution reaches in
the same process and backend; then the labels' Dice (WT/TC/ET) against the first variant's labels and
against the expert's. A last table times ``brats-seg predict`` as a fresh process (imports, model load,
the whole command).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
DEFAULT_CASES = [SHARED / "brats" / "Brats18_CBICA_ABM_1", SHARED / "brats" / "Brats18_2013_2_1"]
#: name -> (backend, test-time flips)
VARIANTS = {
    "torch": ("torch", True),
    "openvino": ("openvino", True),
    "torch-quick": ("torch", False),
    "openvino-quick": ("openvino", False),
}
REGIONS = ("WT", "TC", "ET")


def conv_gflops_per_s(backend: str, threads: int) -> float:
    """GFLOP/s of one plain 3-D convolution (32 -> 32 channels, 3x3x3, on 64^3) on this backend."""
    import torch

    conv = torch.nn.Conv3d(32, 32, 3, padding=1).eval()
    x = torch.randn(1, 32, 64, 64, 64)
    flop = 2 * 32 * 32 * 27 * 64**3
    run = conv
    if backend == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(
            ov.convert_model(conv, example_input=x), "CPU", {"INFERENCE_NUM_THREADS": threads}
        )

        def run(t):
            return compiled(t.numpy())[0]

    with torch.inference_mode():
        run(x)
        seconds = []
        for _ in range(5):
            t0 = time.perf_counter()
            run(x)
            seconds.append(time.perf_counter() - t0)
    return flop / statistics.median(seconds) / 1e9


def network_gflop(card_path: Path) -> float:
    """GFLOP of one window through one network of the card's architecture (torch's flop counter)."""
    import torch
    from monai.networks.nets import UNet
    from torch.utils.flop_counter import FlopCounterMode

    card = json.loads(card_path.read_text())
    arch = {k: v for k, v in card["architecture"].items() if k not in ("class", "parameters")}
    net = UNet(**arch).eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, arch["in_channels"], *card["roi_size"]))
    return counter.get_total_flops() / 1e9


def resident_mb() -> float:
    """This process's resident memory now (MB), from /proc."""
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024


def worker(args: argparse.Namespace) -> None:
    """One (variant, threads, case): time the stages and print one JSON line; save the labels."""
    from brats_seg import files, inference, pipeline, preprocess
    from brats_seg.model import load_model

    backend, flips = VARIANTS[args.worker]
    inference.configure_threads(args.threads)
    t0 = time.perf_counter()
    model = load_model(args.model, device="cpu", backend=backend)
    model_load = time.perf_counter() - t0
    read, runs, write = [], [], []
    for i in range(args.runs + 1):
        t0 = time.perf_counter()
        study = files.load_study(args.case)
        read.append(time.perf_counter() - t0)
        seg = pipeline.segment(study, model, tta_flips=flips)
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            seg.write(Path(out), study, model)
            write.append(time.perf_counter() - t0)
        if i:  # the first is the warm-up
            runs.append(seg.timings)
    np.savez_compressed(args.labels, labels=seg.labels.array)
    shape = preprocess.prepare(study, model.card).tensor.shape[1:]
    windows = inference.count_windows(shape, seg.settings["roi_size"], seg.settings["overlap"])
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    row = {
        "model_load": model_load,
        "read": statistics.median(read[1:]),
        "write": statistics.median(write[1:]),
        **median,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_mb": resident_mb(),
        "passes": len(model.networks) * (4 if flips else 1) * windows,
        "conv_gflops": conv_gflops_per_s(backend, args.threads),
    }
    print(json.dumps(row))


def run_worker(variant: str, threads: int, case: Path, runs: int, model: Path | None, labels: Path) -> dict:
    """Run :func:`worker` in a fresh process and return its row."""
    cmd = [sys.executable, __file__, "--worker", variant, "--threads", str(threads), "--case", str(case)]
    cmd += ["--runs", str(runs), "--labels", str(labels)] + (["--model", str(model)] if model else [])
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{variant} on {case.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def dice_row(labels: np.ndarray, other: np.ndarray | None) -> str:
    """WT/TC/ET Dice of ``labels`` against ``other`` ("-" when there is none)."""
    from brats_seg.metrics import dice

    if other is None:
        return "-"
    masks = {"WT": lambda a: a > 0, "TC": lambda a: (a == 1) | (a == 4), "ET": lambda a: a == 4}
    return "/".join(f"{dice(masks[r](labels), masks[r](other)):.4f}" for r in REGIONS)


def fresh_cli(case: Path, model: Path | None, runs: int) -> dict:
    """``brats-seg predict CASE`` as a fresh process: median wall seconds and the report's timings."""
    walls, peak = [], 0.0
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, "-m", "brats_seg.cli", "predict", str(case), "--output", out]
            cmd += ["--no-progress"] + (["--model", str(model)] if model else [])
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            walls.append(time.perf_counter() - t0)
            peak = max(peak, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
            report = json.loads(next(Path(out).glob("*_report.json")).read_text())
    return {"wall": statistics.median(walls), "timings": report["timings_s"], "peak_mb": peak}


def measure(args: argparse.Namespace, tmp: Path) -> list[dict]:
    """Every (case, threads, variant) row, with its labels' Dice against the first variant's and the truth."""
    from brats_seg import files

    rows = []
    for case in args.cases:
        truth = files.load_study(case).truth_map
        for threads in args.threads:
            first = None
            for variant in args.variants:
                out = tmp / f"{case.name}-{variant}-{threads}.npz"
                row = run_worker(variant, threads, case, args.runs, args.model, out)
                labels = np.load(out)["labels"]
                first = labels if first is None else first
                row.update(case=case.name, variant=variant, threads=threads)
                row["vs_first"] = dice_row(labels, first)
                row["vs_truth"] = dice_row(labels, None if truth is None else truth.array)
                rows.append(row)
                print(f"  {case.name} {variant} {threads} thread(s): {row['total']:.2f} s", file=sys.stderr)
    return rows


def print_rows(rows: list[dict], gflop_window: float) -> None:
    """The stage table, one row per (case, threads, variant)."""
    print(
        "| case | variant | threads | read | prepare | networks | restore+decode | prediction | write | "
        "peak / after MB | passes | GFLOP | GFLOP/s (of one conv's) | Dice WT/TC/ET vs first | vs truth |"
    )
    print("|---" * 15 + "|")
    for r in rows:
        gflop = r["passes"] * gflop_window
        print(
            f"| {r['case']} | {r['variant']} | {r['threads']} | {r['read']:.2f} | {r['prepare']:.2f} | "
            f"{r['predict']:.2f} | {r['postprocess']:.2f} | **{r['total']:.2f}** | {r['write']:.2f} | "
            f"{r['peak_mb']:.0f} / {r['rss_mb']:.0f} | {r['passes']} | {gflop:.0f} | "
            f"{gflop / r['predict']:.0f} "
            f"({gflop / r['predict'] / r['conv_gflops']:.0%} of {r['conv_gflops']:.0f}) | {r['vs_first']} | "
            f"{r['vs_truth']} |"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", type=Path, default=DEFAULT_CASES, help="study folders")
    p.add_argument(
        "--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS), help="first = reference"
    )
    p.add_argument("--threads", nargs="+", type=int, default=[2, 1], help="torch/OpenVINO CPU threads")
    p.add_argument("--runs", type=int, default=5, help="timed predictions after one warm-up (median)")
    p.add_argument("--cli-runs", type=int, default=3, help="fresh brats-seg predict processes (0: none)")
    p.add_argument(
        "--cli-cases", nargs="*", type=Path, default=None, help="default: the demo case, --cases[0]"
    )
    p.add_argument("--model", type=Path, default=None, help="model folder (default: the bundled one)")
    p.add_argument("--cli-only", action="store_true", help="only the fresh-process table")
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--case", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--labels", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        args.threads = args.threads[0]
        return worker(args)
    from brats_seg.card import default_model_dir
    from brats_seg.model import load_model

    folder = args.model or default_model_dir()
    load_model(folder, device="cpu", backend="openvino")  # converts the networks once
    with tempfile.TemporaryDirectory() as tmp:
        rows = [] if args.cli_only else measure(args, Path(tmp))
        if rows:
            print_rows(rows, network_gflop(folder / "model.json"))
        if args.cli_runs:
            print_cli(args, Path(tmp))


def without_truth(case: Path, tmp: Path) -> Path:
    """A folder of links to the case's four sequences, without its ground truth (as a user's study)."""
    from brats_seg.files import load_study

    folder = tmp / f"{case.name}-no-truth"
    folder.mkdir()
    for modality, name in load_study(case).sources.items():
        if modality != "SEG":
            (folder / Path(name).name).symlink_to((case / name).resolve())
    return folder


def print_cli(args: argparse.Namespace, tmp: Path) -> None:
    """The fresh-process table: the demo case and --cases[0] without their ground truth, then --cases[0]
    with it (scoring imports MONAI's metrics); or --cli-cases as they are."""
    cases = args.cli_cases
    if cases is None:
        cases = [SHARED / "demo" / "BraTS-GLI-00001-000", without_truth(args.cases[0], tmp), args.cases[0]]
    print("\n| brats-seg predict, fresh process | wall s (median) | report timings s | peak MB |")
    print("|---|---|---|---|")
    for case in cases:
        r = fresh_cli(case, args.model, args.cli_runs)
        print(f"| {case.name} | {r['wall']:.2f} | {r['timings']} | {r['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
