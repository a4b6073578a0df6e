"""A fuzzer of the loader and the checks (Hypothesis): mutated NIfTI headers and bytes, gzip streams, zips
and DICOM slices. Every input either loads a valid study or raises :class:`~brats_seg.errors.StudyError`:
never another exception, a hang (each example has a deadline) or memory beyond the budget.

The default run tries a few hundred inputs (seconds). The long run of the note::

    BRATS_SEG_FUZZ_EXAMPLES=2500 pytest -q tests/test_fuzz.py -s     # 2,500 per strategy, 10,000 in all

prints, per strategy, the inputs tried, how many loaded and were refused, the slowest input and the
peak resident memory of the process.
"""

from __future__ import annotations

import gzip
import io as _io
import os
import resource
import struct
import time
import zipfile

import nibabel as nib
import numpy as np
import pytest
from helpers import brats_affine, tiny_volumes, write_dicom_study
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brats_seg import harmonise, quality
from brats_seg.errors import StudyError
from brats_seg.files import load_native_study_from_bytes, load_study_from_bytes
from brats_seg.types import MODALITIES
from brats_seg.ui.entries import list_entries

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom's notes on the mutated values

SHAPE = (16, 16, 12)
EXAMPLES = int(os.environ.get("BRATS_SEG_FUZZ_EXAMPLES", "60"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=5000,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SUFFIXES = {"T1": "t1", "T1CE": "t1ce", "T2": "t2", "FLAIR": "flair"}

#: NIfTI-1 header fields (offset, struct format) and values worth trying in them.
FIELDS: dict[str, tuple[int, str]] = {
    "sizeof_hdr": (0, "<i"),
    "dim0": (40, "<h"),
    "dim1": (42, "<h"),
    "dim2": (44, "<h"),
    "dim3": (46, "<h"),
    "dim4": (48, "<h"),
    "datatype": (70, "<h"),
    "bitpix": (72, "<h"),
    "pixdim1": (80, "<f"),
    "pixdim3": (88, "<f"),
    "vox_offset": (108, "<f"),
    "scl_slope": (112, "<f"),
    "scl_inter": (116, "<f"),
    "qform_code": (252, "<h"),
    "sform_code": (254, "<h"),
    "quatern_b": (256, "<f"),
    "qoffset_x": (268, "<f"),
    "srow_x0": (280, "<f"),
    "srow_y1": (300, "<f"),
    "srow_z2": (320, "<f"),
    "srow_z3": (324, "<f"),
}
INTS = [0, 1, -1, 2, 3, 4, 7, 8, 16, 64, 128, 255, 256, 511, 512, 1024, 2304, 32767, -32768]
FLOATS = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    1e-9,
    1e-3,
    9.99,
    10.01,
    99.0,
    1000.0,
    1e30,
    -1e30,
    float("nan"),
    float("inf"),
    -float("inf"),
    352.0,
    351.0,
    348.0,
    1e18,
]

STATS = {"tried": 0, "loaded": 0, "refused": 0, "slowest": (0.0, ""), "by": {}}


def nifti_bytes(modality: str, *, seed: int = 0) -> bytes:
    images, _ = tiny_volumes(SHAPE, seed=seed)
    return nib.Nifti1Image(images[modality], brats_affine(SHAPE)).to_bytes()


VALID = {m: nifti_bytes(m) for m in MODALITIES}


def load_and_check(files: dict[str, bytes], what: str) -> None:
    """The property: listing and loading (and checking) succeed or raise StudyError, in bounded time."""
    t0 = time.perf_counter()
    outcome = "loaded"
    assert isinstance(list_entries(files), list)  # the dashboard's listing of an upload never raises
    try:
        study = load_study_from_bytes(files)
        quality.check_study(study)
        assert study.shape == next(iter(study.images.values())).shape
        assert all(np.isfinite(a).all() for a in study.images.values())
    except StudyError as exc:
        outcome = "refused"
        assert str(exc).strip() and "Traceback" not in str(exc)
    try:  # the raw-study path reads the same headers and decides without registering
        raw = load_native_study_from_bytes(files)
        harmonise.decide(raw)
    except StudyError:
        pass
    seconds = time.perf_counter() - t0
    STATS["tried"] += 1
    STATS[outcome] += 1
    STATS["by"][what] = STATS["by"].get(what, 0) + 1
    if seconds > STATS["slowest"][0]:
        STATS["slowest"] = (seconds, what)


def study_files(t1: bytes, name: str = "Fz_001_t1.nii") -> dict[str, bytes]:
    files = {f"Fz_001_{SUFFIXES[m]}.nii": VALID[m] for m in MODALITIES if m != "T1"}
    files[name] = t1
    return files


@SETTINGS
@given(
    st.lists(
        st.tuples(st.sampled_from(sorted(FIELDS)), st.integers(0, len(FLOATS) - 1)), min_size=1, max_size=4
    )
)
def test_fuzz_header_fields(changes: list[tuple[str, int]]) -> None:
    raw = bytearray(VALID["T1"])
    for field, k in changes:
        offset, fmt = FIELDS[field]
        value = FLOATS[k] if fmt == "<f" else INTS[k % len(INTS)]
        raw[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    load_and_check(study_files(bytes(raw)), "header field")


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 351), st.integers(0, 255)), min_size=1, max_size=12))
def test_fuzz_header_bytes(flips: list[tuple[int, int]]) -> None:
    raw = bytearray(VALID["T1"])
    for offset, value in flips:
        raw[offset] = value
    load_and_check(study_files(bytes(raw)), "header bytes")


@SETTINGS
@given(st.integers(0, 2000), st.one_of(st.none(), st.tuples(st.integers(0, 400), st.integers(0, 255))))
def test_fuzz_gzip_stream(cut: int, flip: tuple[int, int] | None) -> None:
    data = bytearray(gzip.compress(VALID["T1"], compresslevel=6))
    if flip is not None and flip[0] < len(data):
        data[flip[0]] = flip[1]
    data = data[: max(1, len(data) - cut)]
    load_and_check(study_files(bytes(data), "Fz_001_t1.nii.gz"), "gzip")


def study_zip() -> bytes:
    buffer = _io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for m in MODALITIES:
            archive.writestr(f"Fz_001/Fz_001_{SUFFIXES[m]}.nii", VALID[m])
    return buffer.getvalue()


ZIP = study_zip()


@SETTINGS
@given(
    st.lists(st.tuples(st.integers(0, len(ZIP) - 1), st.integers(0, 255)), min_size=1, max_size=6),
    st.booleans(),
)
def test_fuzz_zip(flips: list[tuple[int, int]], near_end: bool) -> None:
    data = bytearray(ZIP)
    for offset, value in flips:  # the central directory and local headers sit at the end and between members
        data[(len(data) - 1 - offset % 200) if near_end else offset] = value
    load_and_check({"Fz_001.zip": bytes(data)}, "zip")


@pytest.fixture(scope="module")
def dicom_zip(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, list[tuple[int, int]]]:
    """A tiny DICOM study zipped (stored, not deflated), and where each slice file lies in the zip."""
    folder = tmp_path_factory.mktemp("fuzz_dicom") / "Fz_DICOM"
    images, _ = tiny_volumes(SHAPE)
    write_dicom_study(folder, images, brats_affine(SHAPE))
    buffer = _io.BytesIO()
    spans = []
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.rglob("IM*")):
            archive.write(path, path.relative_to(folder.parent).as_posix())
    data = buffer.getvalue()
    with zipfile.ZipFile(_io.BytesIO(data)) as archive:
        for info in archive.infolist():
            start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
            spans.append((start, start + info.compress_size))
    return data, spans


def test_fuzz_dicom_slices(dicom_zip: tuple[bytes, list[tuple[int, int]]]) -> None:
    """Bytes of DICOM slice files flipped inside a stored zip (the zip's CRC would refuse them first, so each
    member's CRC is left wrong on purpose for half the inputs and repaired for the other half)."""
    data, spans = dicom_zip

    @SETTINGS
    @given(
        st.integers(0, len(spans) - 1),
        st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), min_size=1, max_size=8),
        st.booleans(),
    )
    def run(member: int, flips: list[tuple[int, int]], repair: bool) -> None:
        raw = bytearray(data)
        start, end = spans[member]
        for offset, value in flips:
            raw[start + offset % (end - start)] = value
        if repair:
            raw = bytearray(_recrc(bytes(raw)))
        load_and_check({"Fz_DICOM.zip": bytes(raw)}, "dicom")

    run()


def _recrc(data: bytes) -> bytes:
    """The zip rewritten with each member's current bytes, so that their CRCs match again."""
    out = _io.BytesIO()
    with (
        zipfile.ZipFile(_io.BytesIO(data)) as src,
        zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as dst,
    ):
        for info in src.infolist():
            start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
            dst.writestr(info.filename, data[start : start + info.compress_size])
    return out.getvalue()


def test_fuzz_summary() -> None:
    """Prints the figures of the run (the strategies above ran first, in file order)."""
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\nfuzz: {STATS['tried']} inputs ({STATS['by']}), {STATS['loaded']} loaded, "
        f"{STATS['refused']} refused, 0 other exceptions; slowest {STATS['slowest'][0]:.2f} s "
        f"({STATS['slowest'][1]}); peak RSS {peak_mb:.0f} MB"
    )
    if STATS["tried"]:
        assert STATS["loaded"] + STATS["refused"] == STATS["tried"]
        assert peak_mb < 4096
