"""How much the raw-study path loses: real BraTS cases made "raw-like", harmonised and segmented.

    python benchmarks/harmonise_accuracy.py          # 6 cases (every 4th of ../shared/data/brats)
    python benchmarks/harmonise_accuracy.py --cases 8 --seed 1 --output artifacts/harmonise_accuracy
    python benchmarks/harmonise_accuracy.py --slices thin   # ~1 mm voxels: registration and resampling alone

Each sequence of a case is moved by its own random rigid transform (up to +-10 degrees about each axis
and +-10 mm along each), resampled onto a grid of its own (thick axial slices, a different field of
view: see ``GRIDS``) and written as NIfTI with scanner-like names. The raw copy then goes through
``brats-seg``'s raw path (``load_native_study`` -> ``harmonise_if_needed`` -> ``segment``), the original
through the BraTS path, each with the ensemble member that held the case out (cross-validation), so
no score is of a case the network trained on. Printed per case and as means:

- Dice per region of the raw path on the harmonised 1 mm grid, against the ground truth moved with
  the T1CE's known transform onto that grid (nearest neighbour); its ratio to the BraTS path's Dice;
- the same on the native T1CE grid (thick slices: the truth itself is coarse there);
- the residual registration error: mean distance (mm) over the brain between where the recovered
  and the true transforms put each point, per registered sequence;
- the time of each harmonisation step.

The cases have no skull (BraTS is skull-stripped), so the skull-stripping step is not exercised here:
``auto`` decides that the study needs no skull stripping, as it would for a stripped raw study.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from brats_seg import files, harmonise, registration
from brats_seg.evaluation import cross_validation_members
from brats_seg.metrics import score
from brats_seg.model import load_model
from brats_seg.pipeline import segment
from brats_seg.types import MODALITIES, LabelMap

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

#: Per sequence: voxel size (mm) and field of view (mm) of its raw-like grid, and its file suffix.
GRIDS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], str]] = {
    "T1": ((0.9, 0.9, 5.0), (230.0, 230.0, 150.0), "t1"),
    "T1CE": ((0.9, 0.9, 5.0), (220.0, 240.0, 150.0), "t1c"),
    "T2": ((0.9, 0.9, 5.5), (240.0, 220.0, 145.0), "T2_AX"),
    "FLAIR": ((1.0, 1.0, 6.0), (230.0, 240.0, 156.0), "fla"),
}


#: The same with about 1 mm voxels: the motion and the resampling without the thick slices' loss.
THIN_GRIDS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], str]] = {
    m: ((0.9, 0.9, 1.0) if m != "FLAIR" else (1.0, 1.0, 1.2), fov, suffix)
    for m, (_, fov, suffix) in GRIDS.items()
}


def random_rigid(rng: np.random.Generator, centre: np.ndarray) -> sitk.Euler3DTransform:
    """A rigid transform of up to +-10 degrees about each axis and +-10 mm along each.

    It turns about ``centre`` (LPS).
    """
    t = sitk.Euler3DTransform()
    t.SetCenter([float(c) for c in centre])
    t.SetRotation(*[float(np.radians(a)) for a in rng.uniform(-10, 10, 3)])
    t.SetTranslation([float(v) for v in rng.uniform(-10, 10, 3)])
    return t


def raw_grid(
    centre: np.ndarray, spacing: tuple[float, ...], fov: tuple[float, ...], rng: np.random.Generator
) -> sitk.Image:
    """An axis-aligned (LPS) grid of ``spacing`` covering ``fov`` around ``centre`` shifted by up to 8 mm."""
    size = [int(round(f / s)) for f, s in zip(fov, spacing, strict=True)]
    origin = np.asarray(centre) + rng.uniform(-8, 8, 3) - (np.asarray(size) - 1) * np.asarray(spacing) / 2
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing([float(s) for s in spacing])
    grid.SetOrigin([float(o) for o in origin])
    return grid


def make_raw_like(case: Path, out: Path, rng: np.random.Generator, grids: dict = GRIDS) -> dict:
    """Write a raw-like copy of ``case`` to ``out``; return the true transforms and the T1CE grid."""
    study = files.load_study(case)
    truth = registration.to_sitk(study.truth.astype(np.float32), study.affine)
    centre = np.array(
        registration.to_sitk(study.images["T1"], study.affine).TransformContinuousIndexToPhysicalPoint(
            [n / 2 for n in study.shape]
        )
    )
    out.mkdir(parents=True, exist_ok=True)
    transforms, made_grids = {}, {}
    for modality in MODALITIES:
        spacing, fov, suffix = grids[modality]
        grid = raw_grid(centre, spacing, fov, rng)
        moved = random_rigid(rng, centre)  # maps a point of this sequence's world to the original world
        image = sitk.Resample(
            registration.to_sitk(study.images[modality], study.affine), grid, moved, sitk.sitkLinear, 0.0
        )
        array, affine = registration.from_sitk(image)
        nib.save(nib.Nifti1Image(array.astype(np.float32), affine), out / f"{case.name}_scan_{suffix}.nii.gz")
        transforms[modality], made_grids[modality] = moved, grid
    return {"truth": truth, "transforms": transforms, "grids": made_grids}


def truth_on(grid_affine: np.ndarray, shape: tuple[int, ...], made: dict) -> LabelMap:
    """The ground truth moved with the T1CE's transform onto a grid in the T1CE's world.

    Resampled by nearest neighbour.
    """
    grid = registration.to_sitk(np.zeros(shape, dtype=np.float32), grid_affine)
    moved = sitk.Resample(
        sitk.Cast(made["truth"], sitk.sitkUInt8),
        grid,
        made["transforms"]["T1CE"],
        sitk.sitkNearestNeighbor,
        0,
        sitk.sitkUInt8,
    )
    array, affine = registration.from_sitk(moved)
    return LabelMap(array.astype(np.uint8), affine, nib.Nifti1Header())


def registration_error(result: harmonise.Harmonised, made: dict) -> dict[str, float]:
    """Mean distance (mm) over brain points between recovered and true reference -> sequence mappings."""
    ijk = np.argwhere(result.brain)[::97]
    points = nib.affines.apply_affine(result.study.affine, ijk) * np.array([-1.0, -1.0, 1.0])  # RAS -> LPS
    to_original = made["transforms"]["T1CE"]
    errors = {}
    for modality, recovered in result.transforms.items():
        inverse = made["transforms"][modality].GetInverse()
        d = [
            np.linalg.norm(
                np.subtract(
                    recovered.TransformPoint(p), inverse.TransformPoint(to_original.TransformPoint(p))
                )
            )
            for p in map(tuple, points)
        ]
        errors[modality] = float(np.mean(d))
    return errors


def run_case(case: Path, members: dict, rng: np.random.Generator, work: Path, grids: dict = GRIDS) -> dict:
    model = members.get(case.name)
    if model is None:
        raise SystemExit(
            f"{case.name}: no ensemble member held it out; expected a case of the model's cross-validation"
        )
    made = make_raw_like(case, work / case.name, rng, grids)
    brats = segment(files.load_study(case), model)
    truth = files.load_study(case).truth_map
    raw = files.load_native_study(work / case.name)
    t0 = time.perf_counter()
    study, result = harmonise.harmonise_if_needed(raw)
    t_harmonise = time.perf_counter() - t0
    seg = segment(study, model, harmonised=result)
    on_1mm = truth_on(study.affine, study.shape, made)
    on_native = truth_on(result.native.affine, result.native.shape, made)
    return {
        "case": case.name,
        "reasons": result.reasons,
        "brats_path": score(brats.labels, truth),
        "raw_1mm": score(seg.labels.array, on_1mm.array, spacing=study.spacing),
        "raw_native": score(seg.native.array, on_native.array, spacing=result.native.spacing),
        "registration_error_mm": registration_error(result, made),
        "mutual_information": {m: r["mutual_information_after"] for m, r in result.registration.items()},
        "timings_s": {**result.timings, "harmonise_wall": round(t_harmonise, 2)},
    }


def summarise(rows: list[dict]) -> str:
    lines = []
    for region in ("WT", "TC", "ET"):
        b = np.array([r["brats_path"][region]["dice"] for r in rows])
        r1 = np.array([r["raw_1mm"][region]["dice"] for r in rows])
        rn = np.array([r["raw_native"][region]["dice"] for r in rows])
        ratio = r1 / np.where(b > 0, b, np.nan)
        lines.append(
            f"{region}: Dice BraTS path {b.mean():.3f}, raw path 1 mm {r1.mean():.3f} (ratio per case "
            f"{np.nanmin(ratio):.2f}-{np.nanmax(ratio):.2f}, mean {np.nanmean(ratio):.3f}), "
            f"native grid {rn.mean():.3f}"
        )
    errors = [e for r in rows for e in r["registration_error_mm"].values()]
    lines.append(
        f"registration error: mean {np.mean(errors):.2f} mm, max {np.max(errors):.2f} mm over "
        f"{len(errors)} registrations"
    )
    totals = [r["timings_s"]["total"] for r in rows]
    lines.append(f"harmonisation: {np.median(totals):.1f} s median ({min(totals):.1f}-{max(totals):.1f} s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=SHARED / "brats", help="folder of BraTS cases (default: %(default)s)"
    )
    parser.add_argument(
        "--cases", type=int, default=6, help="how many: every len/N-th case in name order (default: 6)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random transforms and grids (default: 0)"
    )
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the bundled model)")
    parser.add_argument(
        "--slices",
        choices=("thick", "thin"),
        default="thick",
        help="thick: 5-6 mm axial slices (GRIDS); thin: about 1 mm (THIN_GRIDS) (default: thick)",
    )
    parser.add_argument(
        "--output", type=Path, default=None, help="write results.json here (default: print only)"
    )
    args = parser.parse_args(argv)
    cases = sorted(p for p in args.data.iterdir() if p.is_dir())
    if not cases:
        print(f"{args.data}: no cases", file=sys.stderr)
        return 2
    chosen = cases[:: max(1, len(cases) // args.cases)][: args.cases]
    members = cross_validation_members(load_model(args.model))
    rng = np.random.default_rng(args.seed)
    rows = []
    with tempfile.TemporaryDirectory(prefix="brats_seg_rawlike_") as tmp:
        for case in chosen:
            row = run_case(case, members, rng, Path(tmp), GRIDS if args.slices == "thick" else THIN_GRIDS)
            rows.append(row)
            print(
                json.dumps(
                    {k: row[k] for k in ("case", "registration_error_mm", "mutual_information", "timings_s")}
                )
            )
            print(
                "  "
                + "  ".join(
                    f"{reg}: BraTS {row['brats_path'][reg]['dice']:.3f} "
                    f"raw-1mm {row['raw_1mm'][reg]['dice']:.3f} "
                    f"native {row['raw_native'][reg]['dice']:.3f}"
                    for reg in ("WT", "TC", "ET")
                ),
                flush=True,
            )
    print(summarise(rows))
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
