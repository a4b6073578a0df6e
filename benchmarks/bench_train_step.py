"""Seconds per training step of the default UNet on this machine, per precision and memory layout.

One step = forward, Dice+BCE loss, backward and an optimiser step on a batch of random patches, as
``brats-seg train`` does it (``--precision``, ``--channels-last``); data loading and augmentation
are not included. Prints the median of ``--steps`` steps after ``--warmup`` for each setting:

    python benchmarks/bench_train_step.py                  # 2 threads, batch 2 of 64³ patches
    python benchmarks/bench_train_step.py --threads 1      # one of five fold runs sharing 2 cores
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from brats_seg.training.devices import cpu_bf16_supported
from brats_seg.training.network import DiceBCELoss, build_unet


def step_seconds(
    *, bf16: bool, channels_last: bool, batch: int, patch: int, steps: int, warmup: int
) -> float:
    """Median seconds per training step."""
    torch.manual_seed(0)
    net = build_unet()
    x = torch.randn(batch, 4, patch, patch, patch)
    y = (torch.rand(batch, 3, patch, patch, patch) > 0.7).float()
    if channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
        x = x.to(memory_format=torch.channels_last_3d)
    loss_fn = DiceBCELoss()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
            loss = loss_fn(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=2, help="patches per step (default: %(default)s)")
    p.add_argument("--patch", type=int, default=64, help="patch edge in voxels (default: %(default)s)")
    p.add_argument("--steps", type=int, default=6, help="timed steps per setting (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: %(default)s)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = [("fp32", False, False), ("fp32, channels-last", False, True)]
    if cpu_bf16_supported():
        settings.append(("bf16, channels-last", True, True))
    else:
        print("bf16: skipped, this CPU has no native bfloat16")
    base = None
    for name, bf16, cl in settings:
        s = step_seconds(
            bf16=bf16,
            channels_last=cl,
            batch=args.batch_size,
            patch=args.patch,
            steps=args.steps,
            warmup=args.warmup,
        )
        base = base or s
        print(
            f"{name:22s} {s:.3f} s per step ({base / s:.2f}x), batch {args.batch_size} of {args.patch}^3, "
            f"{args.threads} thread(s)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
