"""Merge training packs written by ``brats-seg pack`` (same preprocessing) into one.

    python docs/model/experiments/cpu-stage6-extra12/merge_packs.py \
        runs/brats23_2mm.npz ../shared/data/packs/brats12_2mm.npz --output runs/brats35_2mm.npz
"""

from __future__ import annotations

import argparse
import json

import numpy as np

KEYS = ("version", "spacing", "orientation", "channels", "normalisation", "crop_margin")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packs", nargs="+")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    arrays, cases, first = {}, [], None
    for path in args.packs:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            first = first or meta
            if any(meta.get(k) != first.get(k) for k in KEYS):
                raise SystemExit(f"{path}: packed with other preprocessing than {args.packs[0]}")
            for name in meta["cases"]:
                if name in cases:
                    raise SystemExit(f"{path}: case {name} is in two packs")
                cases.append(name)
                for suffix in ("image", "lo", "step", "target"):
                    arrays[f"{name}__{suffix}"] = data[f"{name}__{suffix}"]
    meta = {**{k: first[k] for k in KEYS}, "cases": cases, "source": " + ".join(args.packs)}
    np.savez_compressed(args.output, meta=json.dumps(meta), **arrays)
    print(f"{args.output}: {len(cases)} cases")


if __name__ == "__main__":
    main()
