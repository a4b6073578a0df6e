"""\
Hostile inputs through ``brats-seg check``, ``brats-seg predict`` and the dashboard: refusals, crashes, hangs.

    python benchmarks/hostile_inputs.py --output artifacts/hostile            # every kind (about 15 min)
    python benchmarks/hostile_inputs.py --only vox_offset_0,zip_dotdot        # some

Builds each kind of input from the real case Brats18_CBICA_ABM_1 (``../shared/data``), runs it through
``check`` and ``predict --no-tta`` (each a new process, 300 s limit, its peak RSS measured) and through the
dashboard in-process (upload, and Predict with "Quick prediction" when the study loads). Prints a Markdown
table: exit codes (0 done, 2 refused, 1 internal error), whether a traceback appeared, seconds, peak MB,
what the page said; and whether the outcome is the one expected (``refuse`` or ``accept``). A crash is an
exit 1, a traceback or an "Internal error" on the page; a hang is a run killed at the limit.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

HERE = Path(__file__).resolve().parents[1]
SHARED = HERE / ".." / "shared" / "data"
CASE = "Brats18_CBICA_ABM_1"
SUFFIX = {"T1": "t1", "T1CE": "t1ce", "T2": "t2", "FLAIR": "flair"}

MEASURE = """
import resource, subprocess, sys, time, json
t0 = time.perf_counter()
try:
    r = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=300)
    rc, err = r.returncode, r.stderr
except subprocess.TimeoutExpired as e:
    rc = "timeout"
    err = (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
print(json.dumps({"rc": rc, "s": round(time.perf_counter() - t0, 1),
                  "mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024,
                  "traceback": "Traceback" in err,
                  "last": err.strip().splitlines()[-1][:160] if err.strip() else ""}))
"""


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------


def copy_case(base: Path, out: Path, name: str = CASE) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for m, s in SUFFIX.items():
        paths[m] = out / f"{name}_{s}.nii.gz"
        shutil.copy(base / f"{CASE}_{s}.nii.gz", paths[m])
    return paths


def rewrite(path: Path, *, data=None, affine=None, header_edit: Callable | None = None) -> Path:
    """Re-save ``path`` with other data (a fresh header), affine, or header fields."""
    image = nib.load(path)
    header = None if data is not None else image.header.copy()
    out = nib.Nifti1Image(
        np.asarray(image.dataobj) if data is None else data,
        image.affine if affine is None else affine,
        header,
    )
    if header_edit is not None:
        header_edit(out.header)
    nib.save(out, path)
    return path


def to_uncompressed(path: Path) -> Path:
    target = path.with_name(path.name[:-3])
    target.write_bytes(gzip.decompress(path.read_bytes()))
    path.unlink()
    return target


def patch(path: Path, offset: int, value: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(value)] = value
    path.write_bytes(bytes(raw))


def zip_of(folder: Path, target: Path, members: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(folder.parent).as_posix())
        for name, data in (members or {}).items():
            z.writestr(name, data)
    shutil.rmtree(folder)
    return target


# --------------------------------------------------------------------------------------------------
# The kinds: name -> (expected outcome, what it is, builder(base, out) -> the input path)
# --------------------------------------------------------------------------------------------------


def _t1(base: Path, out: Path) -> tuple[Path, dict[str, Path]]:
    paths = copy_case(base, out)
    return out, paths


def header_bytes_case(offset: int, value: bytes, *, uncompress: bool = True):
    def build(base: Path, out: Path) -> Path:
        folder, paths = _t1(base, out)
        t1 = to_uncompressed(paths["T1"]) if uncompress else paths["T1"]
        patch(t1, offset, value)
        return folder

    return build


def t1_rewrite(data_fn: Callable | None = None, **kwargs):
    def build(base: Path, out: Path) -> Path:
        folder, paths = _t1(base, out)
        data = data_fn(np.asarray(nib.load(paths["T1"]).dataobj)) if data_fn else None
        rewrite(paths["T1"], data=data, **kwargs)
        return folder

    return build


def all_four(edit: Callable[[nib.Nifti1Image], nib.Nifti1Image]):
    def build(base: Path, out: Path) -> Path:
        folder, paths = _t1(base, out)
        for p in paths.values():
            nib.save(edit(nib.load(p)), p)
        return folder

    return build


def scaled(factor: float, *, pixdim_too: bool) -> Callable:
    def edit(image):
        affine = image.affine.copy()
        affine[:3, :3] *= factor
        out = nib.Nifti1Image(np.asarray(image.dataobj), affine)
        if not pixdim_too:
            out.header.set_zooms(image.header.get_zooms())
        return out

    return edit


def small(shape) -> Callable:
    def edit(image):
        data = np.asarray(image.dataobj)[tuple(slice(100, 100 + n) for n in shape)]
        return nib.Nifti1Image(np.ascontiguousarray(data), image.affine)

    return edit


def raw_study(edit_flair: Callable | None = None):
    def build(base: Path, out: Path) -> Path:
        shutil.copytree(SHARED / "raw" / "TCGA-FG-6692", out)
        if edit_flair is not None:
            flair = next(out.glob("*_fla.nii.gz"))
            nib.save(edit_flair(nib.load(flair)), flair)
        return out

    return build


def _noise(image):
    return nib.Nifti1Image(
        np.random.default_rng(0).uniform(0, 1000, image.shape).astype(np.float32), image.affine
    )


def _far(image):
    affine = image.affine.copy()
    affine[0, 3] += 400
    return nib.Nifti1Image(np.asarray(image.dataobj), affine)


def files_case(make: Callable[[Path, dict[str, Path]], None]):
    def build(base: Path, out: Path) -> Path:
        folder, paths = _t1(base, out)
        make(folder, paths)
        return folder

    return build


def zip_case(members: Callable[[dict[str, Path]], dict[str, bytes]], *, keep_files: bool = False):
    def build(base: Path, out: Path) -> Path:
        folder, paths = _t1(base, out / CASE)
        extra = members(paths)
        if not keep_files:
            for p in paths.values():
                p.unlink()
        return zip_of(folder, out / f"{CASE}.zip", extra)

    return build


def dicom_case(edit: Callable[[Path], None] | None = None):
    def build(base: Path, out: Path) -> Path:
        sys.path.insert(0, str(HERE / "tests"))
        from helpers import brats_affine, tiny_volumes, write_dicom_study

        images, _ = tiny_volumes((48, 48, 32))
        write_dicom_study(out / "DICOM_1", images, brats_affine((48, 48, 32)))
        if edit is not None:
            edit(out / "DICOM_1")
        return out / "DICOM_1"

    return build


def _gzip_bomb(paths: dict[str, Path]) -> None:
    header = nib.load(paths["T1"]).header.copy()
    header["vox_offset"] = 352
    with gzip.open(paths["T1"], "wb", compresslevel=1) as f:
        f.write(header.binaryblock + b"\0" * 4)
        zeros = bytes(1 << 24)
        for _ in range(128):  # 2 GiB of zeros after the header
            f.write(zeros)


def _affine_singular(base: Path, out: Path) -> Path:
    folder, paths = _t1(base, out)
    for p in paths.values():
        u = to_uncompressed(p)
        patch(u, 252, np.array([0, 1], "<i2").tobytes())
        patch(u, 280, np.zeros(12, "<f4").tobytes())
    return folder


def _pixdim_zero(base: Path, out: Path) -> Path:
    folder, paths = _t1(base, out)
    t1 = to_uncompressed(paths["T1"])
    patch(t1, 252, np.array([0, 0], "<i2").tobytes())
    patch(t1, 80, np.zeros(3, "<f4").tobytes())
    return folder


def _zip_bomb(base: Path, out: Path) -> Path:
    folder, paths = _t1(base, out / CASE)
    target = out / f"{CASE}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for m, p in paths.items():
            if m != "T1":
                z.write(p, f"{CASE}/{p.name}")
        with z.open(f"{CASE}/{paths['T1'].name}", "w", force_zip64=True) as member:
            zeros = bytes(1 << 24)
            for _ in range(64):  # 1 GiB of zeros
                member.write(zeros)
    shutil.rmtree(folder)
    return target


def _zip_nested(base: Path, out: Path) -> Path:
    inner = zip_case(lambda p: {})(base, out / "inner")
    target = out / "outer.zip"
    with zipfile.ZipFile(target, "w") as z:
        z.write(inner, inner.name)
    shutil.rmtree(out / "inner")
    return target


def _zip_symlink(base: Path, out: Path) -> Path:
    target = zip_case(lambda p: {}, keep_files=True)(base, out)
    with zipfile.ZipFile(target, "a") as z:
        info = zipfile.ZipInfo(f"{CASE}/{CASE}_seg.nii.gz")
        info.external_attr = 0o120777 << 16
        z.writestr(info, "/etc/passwd")
    return target


def _affine_shift(base: Path, out: Path) -> Path:
    folder, paths = _t1(base, out)
    affine = nib.load(paths["T1"]).affine.copy()
    affine[0, 3] += 1.0
    rewrite(paths["T1"], affine=affine)
    return folder


def _weird_names(base: Path, out: Path) -> Path:
    name = "we$(id)ird `x`;'q\"u ü 🧠 name"
    folder = out / name
    copy_case(base, folder, name=name)
    return folder


def _seg(values: Callable[[np.ndarray], np.ndarray]):
    def build(base: Path, out: Path) -> Path:
        folder, _ = _t1(base, out)
        seg = np.asarray(nib.load(base / f"{CASE}_seg.nii.gz").dataobj)
        nib.save(
            nib.Nifti1Image(values(seg), nib.load(base / f"{CASE}_seg.nii.gz").affine),
            folder / f"{CASE}_seg.nii.gz",
        )
        return folder

    return build


def _dicom_missing(d: Path) -> None:
    files = sorted((d / "S3").iterdir(), key=lambda f: int(f.name[2:]))
    import pydicom

    for f in files:
        if int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber) == 16:
            f.unlink()


def _dir_empty(base: Path, out: Path) -> Path:
    out.mkdir(parents=True)
    for n in range(1000):
        (out / f"file{n:04d}").touch()
    return out


def _budget_400(base: Path, out: Path) -> Path:
    out.mkdir(parents=True)
    pattern = np.tile(np.arange(8, dtype=np.int16).reshape(2, 2, 2) + 1, (200, 200, 200))
    for s in SUFFIX.values():
        nib.save(nib.Nifti1Image(pattern, np.eye(4)), out / f"Big_{s}.nii.gz")
    return out


def _mixed(base: Path, out: Path) -> Path:
    folder, paths = _t1(base, out)
    other = SHARED / "brats" / "Brats18_CBICA_AMH_1" / "Brats18_CBICA_AMH_1_flair.nii.gz"
    paths["FLAIR"].unlink()
    shutil.copy(other, folder / other.name)
    return folder


def _t1_only(base: Path, out: Path) -> Path:
    return _t1(base, out)[0]


def kinds() -> dict[str, tuple[str, str, Callable[[Path, Path], Path]]]:
    """Every kind: name -> (expected outcome, what it is, builder(base, out) -> the input path)."""
    return {**_header_kinds(), **_study_kinds()}


def _header_kinds() -> dict[str, tuple[str, str, Callable[[Path, Path], Path]]]:
    kinds = {
        "hdr_30000cubed": (
            "refuse",
            "T1 header claims 30000^3 voxels",
            header_bytes_case(42, np.array([30000] * 3, "<i2").tobytes()),
        ),
        "dim_negative": (
            "refuse",
            "T1 dims (240,-240,155)",
            header_bytes_case(44, np.array([-240], "<i2").tobytes()),
        ),
        "dim_zero": ("refuse", "T1 dims (240,0,155)", header_bytes_case(44, np.array([0], "<i2").tobytes())),
        "dim0_5": (
            "accept",
            "T1 dim[0]=5, dims 4 and 5 of size 1 (still 3-D)",
            header_bytes_case(40, np.array([5], "<i2").tobytes()),
        ),
        "4d_volume": (
            "refuse",
            "T1 is 4-D (4 volumes)",
            t1_rewrite(data_fn=lambda a: np.stack([a] * 4, axis=-1)),
        ),
        "dtype_complex": (
            "refuse",
            "T1 stored as complex64",
            t1_rewrite(data_fn=lambda a: a.astype(np.complex64)),
        ),
        "dtype_rgb24": (
            "refuse",
            "T1 datatype code RGB24",
            header_bytes_case(70, np.array([128, 24], "<i2").tobytes()),
        ),
    }
    for more in (
        _header_kinds_1,
        _header_kinds_2,
    ):
        kinds.update(more())
    return kinds


def _header_kinds_1() -> dict[str, tuple[str, str, Callable[[Path, Path], Path]]]:
    """More kinds of :func:`_header_kinds`."""
    f4 = np.float32
    return {
        "nan_voxels": (
            "refuse",
            "T1 float32 with NaN voxels",
            t1_rewrite(
                data_fn=lambda a: np.where(np.arange(a.size).reshape(a.shape) < 100, np.nan, a).astype(f4)
            ),
        ),
        "inf_voxels": (
            "refuse",
            "T1 float32 with +inf voxels",
            t1_rewrite(
                data_fn=lambda a: np.where(np.arange(a.size).reshape(a.shape) < 100, np.inf, a).astype(f4)
            ),
        ),
        "all_zero": ("refuse", "T1 all zeros", t1_rewrite(data_fn=lambda a: np.zeros_like(a))),
        "constant": ("refuse", "T1 constant 100", t1_rewrite(data_fn=lambda a: np.full_like(a, 100))),
        "tiny_8cubed": (
            "refuse",
            "all four 8x8x8 voxels (no head: harmonising refuses it)",
            all_four(small((8, 8, 8))),
        ),
        "single_slice": (
            "refuse",
            "all four 64x64x1 (no head: harmonising refuses it)",
            all_four(small((64, 64, 1))),
        ),
        "pixdim_1000": (
            "refuse",
            "T1 pixdim 1000 mm, codes 0",
            header_bytes_case(76, np.array([1, 1000, 1000, 1000], "<f4").tobytes()),
        ),
        "pixdim_zero": ("refuse", "T1 pixdim 0, sform/qform codes 0", _pixdim_zero),
        "affine_singular": ("refuse", "all four: sform all zero, qform code 0", _affine_singular),
        "qform_sform_disagree": (
            "accept",
            "T1 qform flipped vs sform (sform wins)",
            t1_rewrite(header_edit=lambda h: h.set_qform(np.diag([1, -1, 1, 1]) @ h.get_sform(), code=1)),
        ),
        "truncated_gzip": (
            "refuse",
            "T1 .nii.gz cut in half",
            files_case(lambda f, p: p["T1"].write_bytes(p["T1"].read_bytes()[: p["T1"].stat().st_size // 2])),
        ),
    }


def _header_kinds_2() -> dict[str, tuple[str, str, Callable[[Path, Path], Path]]]:
    """More kinds of :func:`_header_kinds`."""
    return {
        "gzip_bomb_2GiB": (
            "refuse",
            "T1 .nii.gz: header then 2 GiB of zeros",
            files_case(lambda f, p: _gzip_bomb(p)),
        ),
        "zip_bomb_1GiB": ("refuse", "a zip whose T1 member inflates to 1 GiB", _zip_bomb),
        "zip_dotdot": (
            "refuse",
            "zip member ../../x_t1.nii.gz",
            zip_case(lambda p: {"../../PWNED_t1.nii.gz": b"x"}),
        ),
        "zip_absolute": (
            "refuse",
            "zip member /tmp/PWNED_seg.nii.gz",
            zip_case(lambda p: {"/tmp/PWNED_seg.nii.gz": b"x"}),
        ),
        "zip_windows_path": (
            "refuse",
            "zip member C:\\temp\\x_seg.nii.gz",
            zip_case(lambda p: {"C:\\temp\\x_seg.nii.gz": b"x"}),
        ),
        "zip_nested": ("refuse", "a zip holding only another zip", _zip_nested),
        "zip_two_folders": (
            "refuse",
            "zip with the 4 files in A/ and a seg in B/",
            zip_case(lambda p: {"B/x_seg.nii.gz": p["T1"].read_bytes()}, keep_files=True),
        ),
        "zip_symlink": ("refuse", "zip with a symlink member", _zip_symlink),
        "five_sequences": (
            "refuse",
            "a fifth file _dwi.nii.gz",
            files_case(lambda f, p: shutil.copy(p["T1"], f / f"{CASE}_dwi.nii.gz")),
        ),
        "duplicate_modality": (
            "refuse",
            "both _t1 and _T1",
            files_case(lambda f, p: shutil.copy(p["T1"], f / f"{CASE}_T1.nii.gz")),
        ),
    }


def _study_kinds() -> dict[str, tuple[str, str, Callable[[Path, Path], Path]]]:
    kinds = {
        "shape_mismatch": (
            "accept",
            "T1 240x240x154 (harmonised since issue 17)",
            t1_rewrite(data_fn=lambda a: np.ascontiguousarray(a[:, :, :154])),
        ),
        "affine_shift_1mm": ("accept", "T1 affine shifted 1 mm (harmonised)", _affine_shift),
        "weird_names": ("accept", "names with $(...), backticks, ;, quotes, unicode, spaces", _weird_names),
        "empty_file": ("refuse", "T1 is 0 bytes", files_case(lambda f, p: p["T1"].write_bytes(b""))),
        "png_as_nii": (
            "refuse",
            "T1 named .nii.gz is a PNG",
            files_case(lambda f, p: p["T1"].write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(400))),
        ),
        "pickle_as_niigz": (
            "refuse",
            "T1 .nii.gz is a pickle",
            files_case(lambda f, p: p["T1"].write_bytes(pickle.dumps({"x": 1}))),
        ),
        "pickle_gzipped": (
            "refuse",
            "T1 .nii.gz is a gzipped pickle",
            files_case(lambda f, p: p["T1"].write_bytes(gzip.compress(pickle.dumps({"x": 1})))),
        ),
        "seg_label3": (
            "refuse",
            "a seg with label 3",
            _seg(lambda a: np.where(a == 4, 3, a).astype(np.uint8)),
        ),
        "seg_label255": (
            "refuse",
            "a seg with label 255",
            _seg(lambda a: np.where(a == 4, 255, a).astype(np.uint8)),
        ),
        "seg_float_labels": (
            "refuse",
            "a float seg with 3.5",
            _seg(lambda a: np.where(a == 4, 3.5, a).astype(np.float32)),
        ),
    }
    for more in (
        _study_kinds_1,
        _study_kinds_2,
    ):
        kinds.update(more())
    return kinds


def _study_kinds_1() -> dict[str, tuple[str, str, Callable[[Path, Path], Path]]]:
    """More kinds of :func:`_study_kinds`."""
    return {
        "symlink_etc_passwd": (
            "refuse",
            "T1 is a symlink to /etc/passwd",
            files_case(lambda f, p: (p["T1"].unlink(), p["T1"].symlink_to("/etc/passwd"))),
        ),
        "dicom_valid": ("accept", "a valid DICOM study, 4 series 48x48x32 (control)", dicom_case()),
        "dicom_corrupt_file": (
            "refuse",
            "a DICOM slice truncated to 200 bytes",
            dicom_case(
                lambda d: (f := sorted((d / "S2").iterdir())[3]).write_bytes(
                    f.read_bytes()[:200] + b"garbage"
                )
            ),
        ),
        "dicom_missing_slice": (
            "refuse",
            "a DICOM series missing its 16th slice",
            dicom_case(_dicom_missing),
        ),
        "dir_1000_empty": ("refuse", "a folder of 1000 empty files", _dir_empty),
        "sform_scale_1000": (
            "refuse",
            "all four: pixdim 1, sform 1000 mm voxels",
            all_four(scaled(1000.0, pixdim_too=False)),
        ),
        "sform_scale_0.001": (
            "refuse",
            "all four: sform 0.001 mm voxels",
            all_four(scaled(0.001, pixdim_too=False)),
        ),
        "pixdim_99": (
            "refuse",
            "all four: 99 mm voxels (pixdim and sform)",
            all_four(scaled(99.0, pixdim_too=True)),
        ),
        "sform_scale_4": (
            "refuse",
            "all four: 4 mm voxels (a 960 mm field of view)",
            all_four(scaled(4.0, pixdim_too=True)),
        ),
        "vox_offset_1e18": (
            "refuse",
            "T1 vox_offset 1e18",
            header_bytes_case(108, np.array([1e18], "<f4").tobytes()),
        ),
    }


def _study_kinds_2() -> dict[str, tuple[str, str, Callable[[Path, Path], Path]]]:
    """More kinds of :func:`_study_kinds`."""
    return {
        "vox_offset_0": (
            "refuse",
            "T1 vox_offset 0, data at 352",
            header_bytes_case(108, np.array([0], "<f4").tobytes()),
        ),
        "vox_offset_100": (
            "refuse",
            "T1 vox_offset 100 (inside the header)",
            header_bytes_case(108, np.array([100], "<f4").tobytes()),
        ),
        "random_bytes": (
            "refuse",
            "T1 is 1 MiB of random bytes",
            files_case(lambda f, p: p["T1"].write_bytes(np.random.default_rng(0).bytes(1 << 20))),
        ),
        "analyze_header": (
            "refuse",
            "T1 has a 348-byte header without NIfTI magic",
            header_bytes_case(344, b"\0\0\0\0"),
        ),
        "hdr_img_pair_magic": (
            "refuse",
            "T1 has the magic of a .hdr/.img pair",
            header_bytes_case(344, b"ni1\0"),
        ),
        "budget_400cubed": ("refuse", "four 400^3 1 mm volumes of a repeating pattern", _budget_400),
        "scl_slope_inf": (
            "accept",
            "T1 scl_slope = +inf (nibabel ignores a non-finite slope: the file's own values)",
            header_bytes_case(112, np.array([np.inf], "<f4").tobytes()),
        ),
        "scl_slope_nan": (
            "accept",
            "T1 scl_slope = NaN (the standard: ignore, use 1)",
            header_bytes_case(112, np.array([np.nan], "<f4").tobytes()),
        ),
        "name_300_chars": ("refuse", "upload names of 300 characters (dashboard only)", _t1_only),
        "mixed_studies": ("accept", "FLAIR of another case (warned, not refused)", _mixed),
        "raw_noise_flair": (
            "refuse",
            "raw study whose FLAIR is noise (registration fails)",
            raw_study(_noise),
        ),
        "raw_far_flair": ("refuse", "raw study whose FLAIR lies 400 mm away", raw_study(_far)),
        "raw_valid": ("accept", "the real raw study TCGA-FG-6692 (control)", raw_study()),
    }


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------


def run_cli(*args: str) -> dict:
    cmd = [sys.executable, "-m", "brats_seg.cli", *args]
    done = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True, timeout=400)
    return json.loads(done.stdout.strip().splitlines()[-1])


def upload_of(path: Path, name: str) -> dict[str, bytes] | None:
    """What a browser would upload for the input: the files of a NIfTI folder, or a zip."""
    if path.is_file():
        return {path.name: path.read_bytes()}
    files = [p for p in sorted(path.rglob("*")) if p.is_file() or p.is_symlink()]
    if any(p.is_symlink() for p in files):
        return None  # a browser uploads the file a link points to, not the link
    if any(p.parent != path for p in files) or not any(".nii" in p.name for p in files):
        target = path.parent / f"{path.name}.zip"
        with zipfile.ZipFile(target, "w") as z:
            for p in files:
                z.write(p, p.relative_to(path.parent).as_posix())
        return {target.name: target.read_bytes()}
    upload = {p.name: p.read_bytes() for p in files}
    if name == "name_300_chars":
        upload = {("x" * 290) + "_" + n: data for n, data in upload.items()}
    return upload


def run_dashboard(app, upload: dict[str, bytes] | None) -> tuple[str, bool]:
    """What the page says after the upload (and Predict, when the study loads); whether it is a crash."""
    if upload is None:
        return "n/a (a link cannot be uploaded)", False
    app.page.upload.value = tuple(
        {
            "name": n,
            "type": "",
            "size": len(d),
            "content": memoryview(d),
            "last_modified": datetime.datetime.now(datetime.UTC),
        }
        for n, d in upload.items()
    )
    if app.state.study is None:
        text = app.state.message_text
        return f"refused: {text[:70]}", "Internal error" in text
    app.page.quick.value = True
    result = app.predict()
    if result is None:
        return f"loaded; Predict: {app.state.message_text[:70]}", True
    return f"loaded; Predict: ok WT {result.volumes['regions']['WT']['mL']:.1f} mL", False


def run_kind(app: object, base: Path, n: int, name: str, kind: tuple) -> dict:
    """Run one kind through check, predict and the dashboard; its row (printed as a table line)."""
    expected, what, build = kind
    with tempfile.TemporaryDirectory(prefix="brats_seg_hostile_") as tmp:
        path = build(base, Path(tmp) / name)
        cli_ok = name != "name_300_chars"
        check = run_cli("check", str(path)) if cli_ok else {"rc": "n/a"}
        predict = (
            run_cli("predict", str(path), "--output", str(Path(tmp) / "out"), "--no-tta", "--no-progress")
            if cli_ok
            else {"rc": "n/a", "s": 0, "mb": 0, "traceback": False, "last": ""}
        )
        page, page_crash = run_dashboard(app, upload_of(path, name))
    rc = {2: "refuse", 0: "accept"}
    outcome_ok = all(
        rc.get(r["rc"], "n/a" if r["rc"] == "n/a" else "crash") in (expected, "n/a") for r in (check, predict)
    )
    if expected == "accept" and check["rc"] == 0 and predict["rc"] == 2:
        outcome_ok = False
    crash = predict["rc"] in (1, "timeout") or check["rc"] in (1, "timeout") or predict.get("traceback")
    crash = crash or page_crash
    page_ok = page.startswith("refused") == (expected == "refuse") or page.startswith("n/a")
    good = outcome_ok and not crash and page_ok
    print(
        f"| {n:02d} | {name}: {what} | {expected} | {check['rc']} | {predict['rc']} | "
        f"{'yes' if predict.get('traceback') else 'no'} | {predict.get('s', 0)} | {predict.get('mb', 0)} | "
        f"{page.replace('|', '/')} | {'yes' if good else '**no**'} |",
        flush=True,
    )
    return {
        "n": n,
        "kind": name,
        "what": what,
        "expected": expected,
        "check": check,
        "predict": predict,
        "dashboard": page,
        "crash": bool(crash),
        "as_expected": bool(good),
    }


def summary(rows: list[dict]) -> tuple[int, int, list[str]]:
    """Print the closing line; returns the crashes, the hangs and the kinds not as expected."""
    crashes = sum(r["crash"] for r in rows)
    hangs = sum("timeout" in (r["check"]["rc"], r["predict"]["rc"]) for r in rows)
    unexpected = [r["kind"] for r in rows if not r["as_expected"]]
    print(
        f"\n{len(rows)} kinds: {sum(r['expected'] == 'refuse' for r in rows)} to refuse, "
        f"{sum(r['expected'] == 'accept' for r in rows)} to accept; crashes {crashes}, hangs {hangs}; "
        f"not as expected: {unexpected or 'none'}; predict's slowest "
        f"{max(r['predict'].get('s', 0) for r in rows)} s, "
        f"highest peak {max(r['predict'].get('mb', 0) for r in rows)} MB"
    )
    return crashes, hangs, unexpected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="comma-separated kinds (default: all)")
    parser.add_argument("--output", type=Path, default=None, help="write results.json and table.md here")
    args = parser.parse_args(argv)
    base = SHARED / "brats" / CASE
    if not base.is_dir():
        print(f"{base}: not found; this benchmark needs ../shared/data", file=sys.stderr)
        return 2
    from brats_seg.ui import App

    app = App(synchronous=True, preload_model=False, own_temp_dir=False)  # one kernel for every kind
    chosen = kinds() if args.only is None else {k: v for k, v in kinds().items() if k in args.only.split(",")}
    columns = ("#", "kind", "expected", "check", "predict", "traceback", "predict s", "peak MB", "dashboard")
    print("| " + " | ".join((*columns, "as expected")) + " |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = [run_kind(app, base, n, name, kind) for n, (name, kind) in enumerate(chosen.items(), start=1)]
    crashes, hangs, unexpected = summary(rows)
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if not crashes and not hangs and not unexpected else 1


if __name__ == "__main__":
    raise SystemExit(main())
