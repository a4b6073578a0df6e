"""Reading and writing studies: NIfTI files, folders, zips and in-memory uploads.

This module is the only place that touches files. It turns what a user gives (a folder, a ``.zip``,
four or five file paths, or uploaded bytes) into a validated :class:`~brats_seg.types.Study`, and
writes a :class:`~brats_seg.types.LabelMap` back with the input's geometry.

Every problem with the user's files raises :class:`~brats_seg.errors.StudyError` with a message that
names the file and says what was expected and what was found. Headers are checked before any image
data are read, so an oversized or malformed file is refused without allocating its volume.

Example::

    study = load_study("Brats18_CBICA_ABM_1/")
    study = load_study(["a_t1.nii.gz", "a_t1ce.nii.gz", "a_t2.nii.gz", "a_flair.nii.gz"])
    study = load_study("upload.zip", mapping={"scan3.nii.gz": "FLAIR"})
    save_labels(labels, "out/Brats18_CBICA_ABM_1_pred.nii.gz")
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import tempfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from .errors import StudyError
from .types import MODALITIES, LabelMap, RawStudy, Study

__all__ = [
    "AFFINE_ATOL",
    "BRATS_LABELS",
    "MAX_FOV_MM",
    "MAX_NAME_BYTES",
    "MAX_VOXEL_MM",
    "MIN_VOXEL_MM",
    "MAX_PIXDIM_MM",
    "MAX_VOXELS",
    "MAX_ZIP_BYTES",
    "NIFTI_SUFFIXES",
    "SEG",
    "check_geometry",
    "check_image_content",
    "detect_modality",
    "find_studies",
    "load_study",
    "load_native_study",
    "load_native_study_from_bytes",
    "load_study_from_bytes",
    "save_image",
    "save_labels",
    "sha256_file",
    "study_id",
]

StrPath = str | os.PathLike[str]

#: File name suffixes read as NIfTI (compared case-insensitively), longest first.
NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")

#: Voxel budget per file: 512**3 = 134,217,728 voxels (512 MiB as float32). A header describing more
#: voxels is refused before any image data are read.
MAX_VOXELS: int = 512**3

#: Largest absolute difference (in mm, entry-wise) allowed between the affines of a study's files.
AFFINE_ATOL: float = 1e-3

#: Largest plausible voxel size in mm; header spacings outside (0, MAX_PIXDIM_MM] are refused.
MAX_PIXDIM_MM: float = 100.0

#: Plausible voxel edge in mm, measured from the affine (what places the voxels; :func:`check_geometry`).
MIN_VOXEL_MM: float = 0.1
MAX_VOXEL_MM: float = 10.0

#: Largest field of view (voxels x voxel size) along any axis in mm: a head, with room to spare. It
#: bounds the grids the model works on: at most 160 voxels per axis at its 2 mm, 320 at the 1 mm of a
#: harmonised raw study.
MAX_FOV_MM: float = 320.0

#: Longest file name (UTF-8 bytes) an upload may have: what common file systems allow.
MAX_NAME_BYTES: int = 255

#: Budget for the total uncompressed size of a zip's members: 2 GiB (five 240x240x155 float32
#: volumes take about 180 MB). A larger zip is refused as a possible zip bomb.
MAX_ZIP_BYTES: int = 2 * 1024**3

#: The modality key of a ground-truth segmentation file.
SEG: str = "SEG"

#: Label values allowed in a BraTS segmentation (there is no label 3 before BraTS 2023).
BRATS_LABELS: tuple[int, ...] = (0, 1, 2, 4)

#: Mapping values that tell :func:`load_study` to skip a file.
_IGNORE_VALUES = frozenset({"IGNORE", "SKIP", "NONE", ""})

_GZIP_MAGIC = b"\x1f\x8b"
_HEAD_BYTES = 64 * 1024  # compressed bytes read to decode a header
_SEPARATORS = re.compile(r"[^_\-.\s]+")

# --------------------------------------------------------------------------------------------------
# Modality detection
# --------------------------------------------------------------------------------------------------

#: One-token spellings (lower case, on the last token of the stem).
_SINGLE_TOKEN: dict[str, str] = {
    # T1 (native, pre-contrast)
    "t1": "T1",
    "t1n": "T1",
    "t1w": "T1",
    "t1native": "T1",
    "t1pre": "T1",
    # T1 post-contrast (gadolinium)
    "t1ce": "T1CE",
    "t1c": "T1CE",
    "t1gd": "T1CE",
    "t1post": "T1CE",
    "t1contrast": "T1CE",
    "t1postcontrast": "T1CE",
    "t1wce": "T1CE",
    "t1wgd": "T1CE",
    "t1+c": "T1CE",
    "t1+gd": "T1CE",
    # T2
    "t2": "T2",
    "t2w": "T2",
    # FLAIR (a T2-weighted sequence: must win over T2)
    "flair": "FLAIR",
    "t2f": "FLAIR",
    "t2flair": "FLAIR",
    "t2wflair": "FLAIR",
    "fla": "FLAIR",  # scanner exports (dcm2niix-style suffixes)
    "tirm": "FLAIR",  # Siemens turbo inversion recovery (dark fluid)
    "tse": "T2",  # a bare turbo spin echo; "t1_tse" stays T1 (see _ACQUISITION_TOKENS)
    # ground truth
    "seg": SEG,
    "segmentation": SEG,
    "label": SEG,
    "labels": SEG,
    "mask": SEG,
    "truth": SEG,
    "gt": SEG,
    "groundtruth": SEG,
}

#: Multi-token spellings (the last two or three tokens). ``None`` marks a name that must not be
#: taken for a modality even though its last token looks like one.
_MULTI_TOKEN: dict[tuple[str, ...], str | None] = {
    ("t1", "post", "contrast"): "T1CE",
    ("t1", "pre", "contrast"): "T1",
    ("t1", "gd"): "T1CE",
    ("t1", "ce"): "T1CE",
    ("t1", "c"): "T1CE",
    ("t1", "post"): "T1CE",
    ("t1", "contrast"): "T1CE",
    ("t1", "postcontrast"): "T1CE",
    ("t1w", "ce"): "T1CE",
    ("t1w", "gd"): "T1CE",
    ("gd", "t1"): "T1CE",
    ("gd", "t1w"): "T1CE",
    ("t1", "pre"): "T1",
    ("t1", "native"): "T1",
    ("t1", "post", "gad"): "T1CE",
    ("t1", "post", "gd"): "T1CE",
    ("t1", "gad"): "T1CE",
    ("dark", "fluid"): "FLAIR",
    ("t2", "flair"): "FLAIR",
    ("t2w", "flair"): "FLAIR",
    ("ground", "truth"): SEG,
    ("brain", "mask"): None,
}

#: Processing suffixes that may follow the modality token (``T1_brain``, ``flair_reg``).
_PROCESSING_TOKENS = frozenset(
    {
        "brain",
        "bet",
        "ss",
        "skullstripped",
        "stripped",
        "reg",
        "registered",
        "coreg",
        "n4",
        "biascorr",
        "resampled",
        "norm",
        "normalized",
        "normalised",
        "preproc",
    }
)


#: Acquisition words a scanner appends after the sequence (``FLAIR_AX``, ``t1_tse_tra``): skipped
#: when what stands before them names a sequence; a name made of them alone (``scan_tse``) is read as is.
_ACQUISITION_TOKENS = frozenset(
    {"ax", "axial", "tra", "trans", "transverse", "sag", "sagittal", "cor", "coronal", "2d", "3d", "se", "tse", "fse", "ir"}
)


def _split_suffix(filename: str) -> tuple[str, str]:
    """Split a file name into its stem and NIfTI suffix ('' when it has none)."""
    base = _basename(filename)
    lower = base.lower()
    for suffix in NIFTI_SUFFIXES:
        if lower.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)], base[-len(suffix) :]
    return base, ""


def _basename(name: str) -> str:
    """The last component of a POSIX or Windows path."""
    return PurePosixPath(str(name).replace("\\", "/")).name


def _is_nifti_name(filename: str) -> bool:
    return bool(_split_suffix(filename)[1])


def _parse_name(filename: str) -> tuple[str | None, str]:
    """Detect the modality of a file name and return it with the study-ID part of the stem.

    Returns:
        ``(modality, id_part)``: the modality or None, and the stem without the modality (and
        processing) tokens and trailing separators (the whole stem when nothing matched).
    """
    stem, _ = _split_suffix(filename)
    spans = [(m.start(), m.group().lower()) for m in _SEPARATORS.finditer(stem)]
    tokens = [t for _, t in spans]
    end = len(tokens)
    while end > 1 and tokens[end - 1] in _PROCESSING_TOKENS:
        end -= 1
    short = end
    while short > 1 and tokens[short - 1] in _ACQUISITION_TOKENS:
        short -= 1
    modality, used = _match_tokens(tokens, short) if short < end else (None, 0)
    if modality is None:
        modality, used = _match_tokens(tokens, end)
    else:
        end = short
    if modality is None:
        return None, stem
    first = end - used
    # BIDS: sub-01_ce-gd_T1w is a post-contrast T1.
    if modality == "T1" and "ce" in tokens[: first - 1]:
        modality = "T1CE"
    id_part = stem[: spans[first][0]].rstrip("_-. ") if first < len(spans) else stem
    return modality, id_part


def _match_tokens(tokens: Sequence[str], end: int) -> tuple[str | None, int]:
    """The modality named by the tokens that end at ``end`` (three, two or one of them), and how many."""
    for n in (3, 2):
        if end >= n and tuple(tokens[end - n : end]) in _MULTI_TOKEN:
            return _MULTI_TOKEN[tuple(tokens[end - n : end])], n
    if end >= 1 and tokens[end - 1] in _SINGLE_TOKEN:
        return _SINGLE_TOKEN[tokens[end - 1]], 1
    return None, 0


def study_id(filename: str) -> str | None:
    """The study-ID part of a file name, e.g. ``Brats18_CBICA_ABM_1`` of ``Brats18_CBICA_ABM_1_t1ce.nii.gz``.

    Returns:
        The name without its sequence (and processing) tokens, or None when the name shows no
        sequence or nothing before it (``t1.nii.gz``).
    """
    modality, id_part = _parse_name(filename)
    return (id_part or None) if modality else None


def detect_modality(filename: str) -> str | None:
    """Tell which sequence a file holds from its name.

    Matching is case-insensitive and looks only at the last token(s) of the stem (the name without
    ``.nii``/``.nii.gz``, split on ``_``, ``-``, ``.`` and spaces), so study IDs that contain
    ``T1`` or ``t2`` elsewhere do not confuse it. Trailing processing tokens such as ``brain``,
    ``reg`` or ``n4`` are skipped.

    Recognised spellings include BraTS 2018-2021 (``_t1``, ``_t1ce``, ``_t2``, ``_flair``,
    ``_seg``), BraTS 2023+ (``-t1n``, ``-t1c``, ``-t2w``, ``-t2f``, ``-seg``) and common variants
    (``T1w``, ``T1Gd``, ``T1-Gd``, ``T1c``, ``T1post``, ``T2w``, ``T2-FLAIR``, ``t2flair``,
    ``label``/``labels``/``mask``/``truth``/``gt`` for a segmentation) and scanner exports
    (``_fla``, ``T1_POST_GAD``, ``T1wCE``, ``tirm``, ``dark-fluid``, a bare ``tse`` for T2, and
    acquisition words after the sequence such as ``FLAIR_AX`` or ``t1_tse_tra``).

    Args:
        filename: A file name or path.

    Returns:
        ``"T1"``, ``"T1CE"``, ``"T2"``, ``"FLAIR"``, ``"SEG"`` or None when the name is not
        recognised.

    Examples:
        >>> detect_modality("Brats18_TCIA10_628_1_t1ce.nii.gz")
        'T1CE'
        >>> detect_modality("BraTS-GLI-00001-000-t2f.nii.gz")
        'FLAIR'
        >>> detect_modality("scan_003.nii") is None
        True
    """
    return _parse_name(filename)[0]


def _normalise_modality(value: str | None, *, filename: str) -> str | None:
    """Canonical modality for a mapping value; None means "ignore this file"."""
    if value is None or str(value).strip().upper() in _IGNORE_VALUES:
        return None
    upper = str(value).strip().upper()
    if upper in MODALITIES or upper == SEG:
        return upper
    detected = detect_modality(str(value).strip())
    if detected is not None:
        return detected
    raise StudyError(
        f"{filename}: mapping gives unknown modality {value!r}; expected one of "
        f"{', '.join((*MODALITIES, SEG))} (or 'IGNORE' to skip the file)"
    )


# --------------------------------------------------------------------------------------------------
# Small public helpers
# --------------------------------------------------------------------------------------------------


def sha256_file(path: StrPath) -> str:
    """Hex sha256 digest of a file's bytes, read in 1 MiB chunks.

    Args:
        path: The file.

    Returns:
        The 64-character lower-case hex digest.
    """
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _nifti_files(folder: Path) -> list[Path]:
    """NIfTI files directly in ``folder`` (no hidden files), sorted by name."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not _is_hidden(p.name) and _is_nifti_name(p.name)
    )


def has_truth(folder: str | Path) -> bool:
    """Whether a study folder holds a ground-truth label map (``*_seg`` / ``-seg``)."""
    return any(detect_modality(p.name) == SEG for p in Path(folder).iterdir() if p.is_file())


def find_studies(folder: StrPath) -> list[Path]:
    """List the study folders in a folder of studies.

    Args:
        folder: A folder of study folders, or one study folder.

    Returns:
        The sorted subfolders (not hidden) that contain NIfTI files or DICOM series; ``[folder]``
        when the folder itself is one study (NIfTI files, or DICOM files directly or in series
        subfolders of a single ``StudyInstanceUID``); an empty list when there are none.

    Raises:
        StudyError: When ``folder`` is not an existing folder.
    """
    root = Path(folder)
    if not root.is_dir():
        raise StudyError(f"{root.name}: expected a folder of studies, found no folder at {root}")
    if _nifti_files(root) or _is_dicom_study(root):
        return [root]
    return sorted(
        p for p in root.iterdir() if p.is_dir() and not _is_hidden(p.name) and (_nifti_files(p) or _has_dicom(p))
    )


def _subfolders(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.iterdir()) if p.is_dir() and not _is_hidden(p.name)]


def _has_dicom(folder: Path) -> bool:
    """Whether DICOM files lie in ``folder`` or below it (series folders, PACS media)."""
    from .dicom import first_dicom_file

    return first_dicom_file(folder) is not None


def _is_dicom_study(folder: Path) -> bool:
    """Whether ``folder`` is one DICOM study: DICOM files in it, or below it in subfolders of one study.

    A folder whose subfolders hold DICOM files of different studies (``StudyInstanceUID`` of the
    first file of each) is a folder of studies instead.
    """
    from .dicom import first_dicom_file

    if any(_nifti_files(p) for p in _subfolders(folder)):
        return False
    if first_dicom_file(folder, max_depth=0) is not None:
        return True
    firsts = [f for f in (first_dicom_file(p) for p in _subfolders(folder)) if f is not None]
    if not firsts:
        return False
    import pydicom

    uids = set()
    for f in firsts:
        try:
            uids.add(str(pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["StudyInstanceUID"]).get("StudyInstanceUID", "")))
        except Exception:  # an unreadable file is reported when the study is loaded
            uids.add(f"unreadable:{f}")
    return len(uids) == 1


# --------------------------------------------------------------------------------------------------
# Reading one NIfTI file
# --------------------------------------------------------------------------------------------------


@dataclass
class _Header:
    """What the first bytes of a NIfTI file say, checked before its data are read."""

    path: Path
    header: nib.Nifti1Header
    image_class: type[nib.Nifti1Image]
    shape: tuple[int, int, int]
    affine: np.ndarray
    gzipped: bool
    expected_bytes: int  # header + extensions + image data, uncompressed
    file_size: int

    @property
    def name(self) -> str:
        return self.path.name


def _describe_content(head: bytes) -> str:
    """A few words on what a non-NIfTI file seems to hold."""
    if head.startswith(b"\x89PNG"):
        return "a PNG image"
    if head.startswith(b"\xff\xd8\xff"):
        return "a JPEG image"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "a GIF image"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file"
    if head.startswith(b"NRRD"):
        return "an NRRD file"
    if len(head) > 132 and head[128:132] == b"DICM":
        return "a DICOM file (pass the study's folder or a .zip of its DICOM series instead)"
    sample = head[:512]
    if sample and all(32 <= b < 127 or b in (9, 10, 13) for b in sample):
        return "text"
    return f"{len(head)} bytes of unrecognised data" if len(head) < 348 else "unrecognised binary data"


def _gunzip_head(name: str, raw: bytes, n: int) -> bytes:
    """Decompress the first ``n`` bytes of a gzip stream."""
    try:
        return zlib.decompressobj(wbits=31).decompress(raw, n)
    except zlib.error as exc:
        raise StudyError(f"{name}: corrupt or truncated gzip ({exc}); expected a .nii.gz file") from exc


def _gunzip(name: str, raw: bytes, expected: int) -> bytes:
    """Decompress a (possibly multi-member) gzip stream that should hold ``expected`` bytes.

    Output is bounded (``expected`` plus 1 MiB), so a gzip bomb behind a small header is refused
    without being inflated; the CRC of every member is verified.
    """
    limit = expected + (1 << 20)
    too_long = StudyError(
        f"{name}: decompresses to more than the {expected:,} bytes its header describes; expected a "
        "single NIfTI image (corrupt or truncated gzip, or extra data)"
    )
    out = bytearray()
    data = raw
    try:
        while True:
            if len(out) >= limit:
                raise too_long
            d = zlib.decompressobj(wbits=31)
            out += d.decompress(data, limit - len(out))
            if not d.eof:
                if len(out) >= limit:
                    raise too_long
                raise StudyError(
                    f"{name}: corrupt or truncated gzip (the compressed stream ends early after "
                    f"{len(out):,} bytes); expected a complete .nii.gz file"
                )
            data = d.unused_data
            if not data.startswith(_GZIP_MAGIC):
                return bytes(out)
    except zlib.error as exc:
        raise StudyError(f"{name}: corrupt or truncated gzip ({exc}); expected a valid .nii.gz file") from exc


def _parse_header_block(name: str, head: bytes) -> tuple[nib.Nifti1Header, type[nib.Nifti1Image], int]:
    """Build the header of a single-file NIfTI-1 or NIfTI-2 image from its first bytes."""
    if len(head) < 4:
        raise StudyError(
            f"{name}: not a NIfTI file ({_describe_content(head)}); expected a NIfTI-1 or NIfTI-2 image"
        )
    size_le = int.from_bytes(head[:4], "little")
    size_be = int.from_bytes(head[:4], "big")
    if 348 in (size_le, size_be) and len(head) >= 348:
        size, magic, header_class, image_class = 348, head[344:348], nib.Nifti1Header, nib.Nifti1Image
        single, pair = b"n+1\0", b"ni1\0"
    elif 540 in (size_le, size_be) and len(head) >= 540:
        size, magic, header_class, image_class = 540, head[4:8], nib.Nifti2Header, nib.Nifti2Image
        single, pair = b"n+2\0", b"ni2\0"
    else:
        raise StudyError(
            f"{name}: not a NIfTI file (found {_describe_content(head)}); expected a NIfTI-1 or NIfTI-2 "
            "image (.nii or .nii.gz)"
        )
    if magic == pair:
        raise StudyError(
            f"{name}: found the header of a NIfTI .hdr/.img pair; expected a single-file NIfTI "
            "image (.nii or .nii.gz)"
        )
    if magic != single:
        raise StudyError(
            f"{name}: has a {size}-byte header but no NIfTI magic (found {magic!r}, an Analyze 7.5 "
            f"file?); expected a NIfTI-1 or NIfTI-2 image"
        )
    endianness = "<" if size_le == size else ">"
    try:
        header = header_class(head[:size], endianness=endianness, check=False)
    except (HeaderDataError, ValueError) as exc:
        raise StudyError(f"{name}: invalid NIfTI header ({exc})") from exc
    return header, image_class, size


def _check_header(
    name: str, header: nib.Nifti1Header, *, max_voxels: int
) -> tuple[tuple[int, int, int], int]:
    """Check dims, voxel budget, spacing and data type; return the 3-D shape and data bytes."""
    dim = [int(d) for d in header["dim"]]
    ndim = dim[0]
    if not 1 <= ndim <= 7:
        raise StudyError(f"{name}: invalid NIfTI header: dim[0] (number of dimensions) is {ndim}; expected 3")
    shape = tuple(dim[1 : 1 + ndim])
    if any(s <= 0 for s in shape):
        raise StudyError(
            f"{name}: invalid image size {shape} in the header; expected every dimension to be positive"
        )
    n_voxels = math.prod(shape)
    if n_voxels > max_voxels:
        raise StudyError(
            f"{name}: header describes a {' x '.join(map(str, shape))} image ({n_voxels:,} voxels); "
            f"expected at most max_voxels={max_voxels:,} voxels per file, so it was not read"
        )
    if ndim < 3 or any(s != 1 for s in shape[3:]):
        hint = (
            "; a 4-D file holding several sequences must be split into one 3-D file per sequence"
            if ndim > 3
            else ""
        )
        raise StudyError(f"{name}: expected a 3-D volume, found {ndim}-D shape {shape}{hint}")
    pixdim = [float(p) for p in header["pixdim"][1:4]]
    if not all(math.isfinite(p) and 0 < p <= MAX_PIXDIM_MM for p in pixdim):
        raise StudyError(
            f"{name}: implausible voxel size {tuple(pixdim)} mm in the header; expected each spacing "
            f"in (0, {MAX_PIXDIM_MM:g}] mm"
        )
    try:
        dtype = header.get_data_dtype()
    except (HeaderDataError, KeyError, ValueError) as exc:
        code = int(header["datatype"])
        raise StudyError(f"{name}: unsupported NIfTI data type code {code}; expected a numeric type") from exc
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise StudyError(
            f"{name}: unsupported voxel data type {dtype} (code {int(header['datatype'])}); "
            "expected real-valued numbers (integer or float)"
        )
    return shape[:3], n_voxels * dtype.itemsize  # type: ignore[return-value]


def check_geometry(name: str, affine: np.ndarray, shape: Sequence[int]) -> None:
    """Refuse a voxel-to-world affine that cannot place a head: singular, or implausible sizes.

    Args:
        name: The file (or series) named in the message.
        affine: The 4 x 4 voxel-to-world affine.
        shape: The voxel grid.

    Raises:
        StudyError: For a singular 3 x 3 part (e.g. all zeros), a voxel edge outside
            [:data:`MIN_VOXEL_MM`, :data:`MAX_VOXEL_MM`] mm, or a field of view over :data:`MAX_FOV_MM` mm.
    """
    linear = np.asarray(affine, dtype=np.float64)[:3, :3]
    spacing = np.sqrt((linear**2).sum(axis=0))
    if not abs(float(np.linalg.det(linear))) > 1e-9 * max(float(np.prod(spacing)), 1e-30) or not spacing.all():
        raise StudyError(
            f"{name}: the affine (voxel-to-world matrix) is singular (rows {np.round(linear, 4).tolist()}); expected an "
            "invertible matrix that places each voxel in the scanner's space (check the sform/qform of the header)"
        )
    shown = " x ".join(f"{v:.4g}" for v in spacing)
    if not ((spacing >= MIN_VOXEL_MM) & (spacing <= MAX_VOXEL_MM)).all():
        raise StudyError(
            f"{name}: voxels of {shown} mm according to its affine; expected each edge within "
            f"{MIN_VOXEL_MM:g}-{MAX_VOXEL_MM:g} mm (MIN_VOXEL_MM, MAX_VOXEL_MM) for a brain MR image"
        )
    fov = spacing * np.asarray(shape[:3], dtype=np.float64)
    if fov.max() > MAX_FOV_MM:
        raise StudyError(
            f"{name}: a field of view of {' x '.join(f'{v:.0f}' for v in fov)} mm ({' x '.join(map(str, shape[:3]))} voxels "
            f"of {shown} mm); expected at most {MAX_FOV_MM:g} mm along each axis (MAX_FOV_MM: a head), which bounds "
            "the time and memory a study can take"
        )


def _read_header(path: Path, *, max_voxels: int) -> _Header:
    """Read and check the header of ``path`` (only its first bytes are read)."""
    name = path.name
    try:
        file_size = path.stat().st_size
        with path.open("rb") as f:
            first = f.read(_HEAD_BYTES)
    except FileNotFoundError as exc:
        raise StudyError(f"{name}: file not found ({path})") from exc
    except OSError as exc:
        raise StudyError(f"{name}: cannot read the file ({exc})") from exc
    if not first:
        raise StudyError(f"{name}: the file is empty (0 bytes); expected a NIfTI image")
    gzipped = first.startswith(_GZIP_MAGIC)
    head = _gunzip_head(name, first, 540) if gzipped else first[:540]
    if gzipped and len(head) < 348 and file_size <= len(first):
        what = _describe_content(head) if len(head) >= 4 else "too few bytes"
        raise StudyError(
            f"{name}: corrupt or truncated gzip, or not a NIfTI file inside (decompressed {len(head)} "
            f"bytes: {what}); expected a .nii.gz image"
        )
    header, image_class, header_size = _parse_header_block(name, head)
    shape, data_bytes = _check_header(name, header, max_voxels=max_voxels)
    vox_offset = float(header["vox_offset"])
    if not header_size + 4 <= vox_offset < 2**40:
        raise StudyError(
            f"{name}: the header's vox_offset is {vox_offset:g}; the NIfTI standard requires at least {header_size + 4} "
            "in a single-file image (the data follow the header), so the data's start is unknown"
        )
    offset = max(int(header.get_data_offset()), header_size + 4)
    expected = offset + data_bytes
    if not gzipped and file_size < expected:
        raise StudyError(
            f"{name}: truncated file: the header describes {expected:,} bytes, the file holds "
            f"{file_size:,} bytes"
        )
    slack = expected // 100 + 65536  # gzip overhead on incompressible data is far below 1 %
    if file_size > expected + slack:
        raise StudyError(
            f"{name}: the file is {file_size:,} bytes but its header describes only {expected:,} "
            "bytes of NIfTI data; expected a single image per file"
        )
    try:
        affine = header.get_best_affine()
    except (HeaderDataError, ValueError, np.linalg.LinAlgError) as exc:
        raise StudyError(f"{name}: invalid orientation (qform/sform) in the header ({exc})") from exc
    if not np.all(np.isfinite(affine)):
        raise StudyError(f"{name}: the header's affine has non-finite entries; expected a finite affine")
    check_geometry(name, affine, shape)
    return _Header(path, header, image_class, shape, affine, gzipped, expected, file_size)


def _read_data(info: _Header) -> tuple[np.ndarray, nib.Nifti1Header, np.ndarray, str]:
    """Read the image of a checked header.

    Returns:
        ``(float32 array of the 3-D shape, header copy, affine, sha256 of the file bytes)``.
    """
    name = info.name
    try:
        raw = info.path.read_bytes()
    except OSError as exc:
        raise StudyError(f"{name}: cannot read the file ({exc})") from exc
    digest = hashlib.sha256(raw).hexdigest()
    if info.gzipped:
        raw = _gunzip(name, raw, info.expected_bytes)
    if len(raw) < info.expected_bytes:
        raise StudyError(
            f"{name}: truncated image data: the header describes {info.expected_bytes:,} bytes, "
            f"the file holds {len(raw):,} bytes"
        )
    try:
        image = info.image_class.from_bytes(raw)
        data = image.get_fdata(dtype=np.float32)
    except (HeaderDataError, ImageFileError, ValueError, OSError, EOFError) as exc:
        raise StudyError(f"{name}: cannot be read as a NIfTI image ({exc})") from exc
    data = data.reshape(info.shape)
    header = image.header.copy()
    if header.get_data_shape() != info.shape:
        header.set_data_shape(info.shape)
    return data, header, np.array(image.affine, dtype=np.float64), digest


def _check_finite(name: str, data: np.ndarray) -> None:
    n_bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if n_bad:
        raise StudyError(
            f"{name}: {n_bad:,} of {data.size:,} voxels are not finite (NaN or inf); expected finite values"
        )


def check_image_content(name: str, modality: str, data: np.ndarray) -> None:
    """Refuse an image that holds no picture: every voxel 0, or every voxel one value.

    Raises:
        StudyError: naming the file (or series) and the value found.
    """
    if not np.any(data):
        raise StudyError(f"{name}: every voxel is 0 (an empty image); expected an MRI {modality} sequence")
    first = data.flat[0]
    if np.all(data == first):
        raise StudyError(
            f"{name}: every voxel is {first:g} (an image without contrast); expected an MRI {modality} sequence"
        )


def _to_labels(name: str, data: np.ndarray) -> np.ndarray:
    """Validate a segmentation (values in 0, 1, 2, 4) and return it as uint8."""
    lo, hi = float(data.min()), float(data.max())
    if lo >= 0 and hi <= 255 and np.array_equal(data, np.round(data)):
        present = np.flatnonzero(np.bincount(data.astype(np.uint8).ravel(), minlength=256))
    else:
        present = np.unique(data)
    bad = [v for v in present.tolist() if v not in BRATS_LABELS]
    if bad:
        shown = ", ".join(f"{v:g}" for v in bad[:10]) + (", ..." if len(bad) > 10 else "")
        hint = (
            " (label 3 is the enhancing tumour in BraTS 2023+ data: relabel 3 -> 4 first)" if 3 in bad else ""
        )
        raise StudyError(
            f"{name}: unexpected label values {shown} in the segmentation; expected BraTS labels "
            f"0, 1, 2, 4 (background, NCR, ED, ET){hint}"
        )
    return data.astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# Assigning files to modalities
# --------------------------------------------------------------------------------------------------


def _normalise_mapping(mapping: Mapping[str, str] | None) -> dict[str, str | None]:
    """Mapping keyed by base name, values canonical modalities (None: ignore the file)."""
    if not mapping:
        return {}
    return {_basename(k): _normalise_modality(v, filename=_basename(k)) for k, v in mapping.items()}


def _assign(
    paths: Sequence[Path], mapping: dict[str, str | None], where: str, *, partial: bool = False
) -> dict[str, Path]:
    """Decide the modality of each file and check there is one file per sequence.

    With ``partial``, mapping keys that name none of ``paths`` are ignored instead of refused.
    """
    if not paths:
        raise StudyError(
            f"{where}: no NIfTI files (.nii, .nii.gz) found; expected 4 (T1, T1CE, T2, FLAIR) and "
            "optionally a segmentation"
        )
    names = [p.name for p in paths]
    unknown_keys = sorted(set(mapping) - set(names))
    if unknown_keys and not partial:
        raise StudyError(
            f"{unknown_keys[0]}: named in the mapping but not among the study's files ({', '.join(names)})"
        )
    found: dict[str, list[Path]] = {}
    unrecognised: list[str] = []
    for path in paths:
        modality = mapping[path.name] if path.name in mapping else detect_modality(path.name)
        if path.name in mapping and modality is None:
            continue  # explicitly ignored
        if modality is None:
            unrecognised.append(path.name)
        else:
            found.setdefault(modality, []).append(path)
    if unrecognised:
        raise StudyError(
            f"{', '.join(unrecognised)}: cannot tell which sequence the file name means; expected a "
            "name ending in _t1, _t1ce, _t2, _flair, _seg (BraTS 2018-2021) or -t1n, -t1c, -t2w, "
            "-t2f, -seg (BraTS 2023); rename the file or pass an explicit mapping, e.g. "
            f"mapping={{{unrecognised[0]!r}: 'T1CE'}} (values T1, T1CE, T2, FLAIR, SEG or IGNORE)"
        )
    segs = found.get(SEG, [])
    if len(segs) > 1:
        raise StudyError(
            f"{', '.join(p.name for p in segs)}: more than one segmentation file; expected at most one"
        )
    for modality in MODALITIES:
        files = found.get(modality, [])
        if len(files) > 1:
            raise StudyError(
                f"{' and '.join(p.name for p in files)}: {len(files)} files for {modality}; expected "
                "one file per sequence (use a mapping to say which is which)"
            )
    missing = [m for m in MODALITIES if m not in found]
    if missing:
        have = ", ".join(f"{m} ({found[m][0].name})" for m in (*MODALITIES, SEG) if m in found) or "none"
        raise StudyError(
            f"{where}: missing {', '.join(missing)}; expected the 4 sequences T1, T1CE, T2, FLAIR, "
            f"found {have} among {', '.join(names)}"
        )
    return {m: files[0] for m, files in found.items()}


def _infer_name(paths: Sequence[Path]) -> str:
    """Study name from file names: the common study-ID prefix, e.g. ``Brats18_CBICA_ABM_1``."""
    ids = [_parse_name(p.name)[1] for p in paths]
    common = os.path.commonprefix(ids).rstrip("_-. ")
    if not common:
        common = os.path.commonprefix([_split_suffix(p.name)[0] for p in paths]).rstrip("_-. ")
    return common or _common_tokens(ids) or "study"


def _common_tokens(ids: Sequence[str]) -> str:
    """The ID that scanner exports put between series descriptions (``T1_AX_TCGA-FG-6692_SE_10``): the
    longest ``_``-separated token with a digit that every ID holds, else the longest run of tokens, or ''."""
    tokens = [i.split("_") for i in ids]
    first = tokens[0] if tokens else []
    shared = [t for t in first if any(c.isdigit() for c in t) and len(t) >= 4 and all(t in other for other in tokens[1:])]
    if shared:
        return max(shared, key=len)
    best = ""
    for a in range(len(first)):
        for b in range(len(first), a, -1):
            run = "_".join(first[a:b])
            if len(run) > len(best) and all(f"_{run}_" in f"_{'_'.join(t)}_" for t in tokens[1:]):
                best = run
                break
    return best.strip("_-. ")


class _OnGrid(Protocol):
    """What :func:`_check_grid` compares: a NIfTI ``_Header`` or a ``dicom.DicomSeries``."""

    name: str
    shape: tuple[int, int, int]
    affine: np.ndarray


def _check_grid(ref: _OnGrid, other: _OnGrid, *, affine_atol: float) -> None:
    """Check that ``other`` lies on the voxel grid of ``ref``."""
    if other.shape != ref.shape:
        raise StudyError(
            f"{other.name}: shape {other.shape} differs from {ref.name} {ref.shape}; expected all "
            "files of a study on one voxel grid (co-registered and resampled to the same space)"
        )
    diff = float(np.max(np.abs(other.affine - ref.affine)))
    if not diff <= affine_atol:
        fmt = {"float_kind": lambda x: f"{x:.4g}"}
        raise StudyError(
            f"{other.name}: affine differs from that of {ref.name} by up to {diff:.4g} mm; expected "
            f"the same affine within affine_atol={affine_atol:g} mm.\n"
            f"{ref.name}:\n{np.array2string(ref.affine, formatter=fmt)}\n"
            f"{other.name}:\n{np.array2string(other.affine, formatter=fmt)}"
        )


def _load_files(
    paths: Sequence[Path],
    *,
    mapping: Mapping[str, str] | None,
    name: str | None,
    default_name: str | None,
    where: str,
    max_voxels: int,
    affine_atol: float,
    load_truth: bool,
    partial_mapping: bool,
    same_grid: bool = True,
) -> RawStudy:
    """Assign, check and read the files of one study.

    With ``same_grid`` every file must lie on the T1's grid (checked before any data are read);
    without it each sequence keeps its own grid, unless a ground truth is read (it is scored voxel by
    voxel, so it and the four sequences must share the T1's grid).
    """
    assigned = _assign(paths, _normalise_mapping(mapping), where, partial=partial_mapping)
    read = [*MODALITIES, *([SEG] if load_truth and SEG in assigned else [])]
    headers = {m: _read_header(assigned[m], max_voxels=max_voxels) for m in read}
    ref = headers["T1"]
    if same_grid or SEG in headers:  # a ground truth is compared voxel by voxel: it needs one grid
        for modality in list(headers)[1:]:
            _check_grid(ref, headers[modality], affine_atol=affine_atol)
    wanted = read
    images: dict[str, np.ndarray] = {}
    affines: dict[str, np.ndarray] = {}
    nifti_headers: dict[str, nib.Nifti1Header] = {}
    sha256: dict[str, str] = {}
    truth: np.ndarray | None = None
    for modality in wanted:
        info = headers[modality]
        data, header, affine, digest = _read_data(info)
        _check_finite(info.name, data)
        sha256[modality] = digest
        if modality == SEG:
            truth = _to_labels(info.name, data)
            continue
        check_image_content(info.name, modality, data)
        images[modality], affines[modality], nifti_headers[modality] = data, affine, header
    return RawStudy(
        name=name or default_name or _infer_name(list(assigned.values())),
        images=images,
        affines=affines,
        headers=nifti_headers,
        sources={m: assigned[m].name for m in wanted},
        truth=truth,
        sha256=sha256,
    )


# --------------------------------------------------------------------------------------------------
# Folders and zips
# --------------------------------------------------------------------------------------------------


def _study_folder(folder: Path) -> Path:
    """The folder holding the study's NIfTI files: ``folder`` or its single study subfolder."""
    if _nifti_files(folder):
        return folder
    subfolders = [p for p in sorted(folder.iterdir()) if p.is_dir() and not _is_hidden(p.name)]
    studies = [p for p in subfolders if _nifti_files(p)]
    if len(studies) == 1:
        return studies[0]
    if len(studies) > 1:
        shown = ", ".join(p.name for p in studies[:5]) + (", ..." if len(studies) > 5 else "")
        raise StudyError(
            f"{folder.name}: holds {len(studies)} study folders ({shown}); expected one study: pass "
            "one of them (find_studies lists them)"
        )
    content = sorted(p.name for p in folder.iterdir() if not _is_hidden(p.name))
    shown = ", ".join(content[:8]) + (", ..." if len(content) > 8 else "") if content else "nothing"
    raise StudyError(
        f"{folder.name}: no NIfTI files (.nii, .nii.gz) found (found {shown}); expected 4 "
        "(T1, T1CE, T2, FLAIR) and optionally a segmentation"
    )


def _member_parts(zip_name: str, member: str) -> list[str]:
    """Path components of a zip member; refuse paths that escape the archive folder."""
    parts = re.split(r"[\\/]+", member)
    if member.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", member) or ".." in parts:
        raise StudyError(
            f"{zip_name}: member {member!r} has a path outside the archive folder (absolute or with "
            "'..'); expected relative paths inside the zip, so the zip was refused"
        )
    return [p for p in parts if p not in ("", ".")]


def _extract_zip(zip_path: Path, dest: Path, *, tree: bool = False) -> tuple[list[Path], str | None]:
    """Extract the NIfTI members of a zip, flattened, into ``dest``.

    ``__MACOSX/`` and hidden files are ignored, as are members that are not NIfTI files. With
    ``tree=True`` every other member is extracted too, keeping its relative path (DICOM series
    folders, whose files often share names such as ``IM0001``).

    Returns:
        The extracted files and the name of the folder that held them inside the zip (None when
        they sat at the top level).

    Raises:
        StudyError: For an invalid zip, an escaping member path, a symbolic link, a total
            uncompressed size above ``MAX_ZIP_BYTES``, NIfTI files in several folders, or a member
            that cannot be extracted.
    """
    zname = zip_path.name
    budget = MAX_ZIP_BYTES
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError, RuntimeError) as exc:
        # NotImplementedError: a member that needs a newer zip version (found by the fuzzer)
        raise StudyError(f"{zname}: not a valid zip file ({exc}); expected a .zip of one study") from exc
    with archive:
        members: list[tuple[zipfile.ZipInfo, list[str]]] = []
        total = 0
        for info in archive.infolist():
            parts = _member_parts(zname, info.filename)
            if info.is_dir() or not parts:
                continue
            total += info.file_size
            if parts[0] == "__MACOSX" or any(_is_hidden(p) for p in parts):
                continue
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise StudyError(
                    f"{zname}: member {info.filename!r} is a symbolic link; expected regular files only"
                )
            if tree or _is_nifti_name(parts[-1]):
                members.append((info, parts))
        if tree:
            from .dicom import MAX_DICOM_DEPTH, MAX_DICOM_FILES

            if len(members) > MAX_DICOM_FILES:
                raise StudyError(
                    f"{zname}: holds {len(members):,} files; expected the series of one study (at most "
                    f"{MAX_DICOM_FILES:,} files, MAX_DICOM_FILES)"
                )
            deep = next((info.filename for info, parts in members if len(parts) > MAX_DICOM_DEPTH + 2 or len(info.filename) > 1024), None)
            if deep is not None:
                raise StudyError(
                    f"{zname}: member {deep[:80]!r} lies too deep or has too long a name; expected a study folder "
                    f"with series folders (at most {MAX_DICOM_DEPTH + 2} levels)"
                )
        if total > budget:
            raise StudyError(
                f"{zname}: the zip's members uncompress to {total:,} bytes; expected at most "
                f"{budget:,} bytes (MAX_ZIP_BYTES), so it was refused as a possible zip bomb"
            )
        folders = sorted({"/".join(parts[:-1]) for _, parts in members})
        if len(folders) > 1 and not tree:
            shown = ", ".join(f"{f or '.'}/" for f in folders[:5]) + (", ..." if len(folders) > 5 else "")
            raise StudyError(
                f"{zname}: holds NIfTI files in {len(folders)} folders ({shown}); expected one study "
                "(one folder, or the files at the top level)"
            )
        basenames = Counter(parts[-1] for _, parts in members)
        dupes = sorted(b for b, n in basenames.items() if n > 1)
        if dupes and not tree:
            raise StudyError(f"{zname}: member {dupes[0]!r} appears more than once; expected unique files")
        written = 0
        out: list[Path] = []
        for info, parts in members:
            target = dest.joinpath(*parts) if tree else dest / parts[-1]
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, target.open("wb") as dst:
                    for chunk in iter(lambda src=src: src.read(1 << 20), b""):
                        written += len(chunk)
                        if written > budget:
                            raise StudyError(
                                f"{zname}: members uncompress to more than {budget:,} bytes "
                                "(MAX_ZIP_BYTES); refused as a possible zip bomb"
                            )
                        dst.write(chunk)
            except StudyError:
                raise
            except (
                zipfile.BadZipFile,
                zlib.error,
                EOFError,
                RuntimeError,
                NotImplementedError,
                OSError,
            ) as exc:
                raise StudyError(
                    f"{zname}: cannot extract {info.filename!r} ({exc}); expected an intact, unencrypted zip"
                ) from exc
            out.append(target)
    inner = folders[0].split("/")[-1] if folders and folders[0] else None
    return sorted(out), inner


def _is_zip(path: Path) -> bool:
    if path.suffix.lower() == ".zip":
        return True
    try:
        with path.open("rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def _load_dicom(
    folder: Path,
    *,
    mapping: Mapping[str, str] | None,
    name: str | None,
    default_name: str,
    where: str,
    max_voxels: int,
    affine_atol: float,
    load_truth: bool,
    partial_mapping: bool,
    same_grid: bool = True,
) -> RawStudy:
    """Load the DICOM series under ``folder`` (see :mod:`brats_seg.dicom`)."""
    from .dicom import dicom_files, load_dicom_study

    del load_truth  # a ground truth is read from NIfTI only
    return load_dicom_study(
        dicom_files(folder),
        mapping=mapping,
        name=name or default_name,
        where=where,
        max_voxels=max_voxels,
        affine_atol=affine_atol,
        partial_mapping=partial_mapping,
        same_grid=same_grid,
    )


# --------------------------------------------------------------------------------------------------
# Public loaders
# --------------------------------------------------------------------------------------------------


def load_study(
    source: StrPath | Sequence[StrPath],
    *,
    mapping: Mapping[str, str] | None = None,
    name: str | None = None,
    max_voxels: int = MAX_VOXELS,
    affine_atol: float = AFFINE_ATOL,
    load_truth: bool = True,
    partial_mapping: bool = False,
) -> Study:
    """Load and validate one study.

    Args:
        source: A study folder (or a folder holding exactly one study folder), a ``.zip`` of a study
            folder or of the files themselves, or a sequence of the 4 file paths (5 with a
            segmentation). A folder or zip without NIfTI files is read as DICOM: the MR series of
            one study, in it or in series subfolders (:mod:`brats_seg.dicom`).
        mapping: File name (base name) -> modality (``T1``, ``T1CE``, ``T2``, ``FLAIR``, ``SEG``, or
            ``IGNORE`` to skip the file). Overrides :func:`detect_modality` for those files. For
            DICOM the keys are series descriptions, numbers or UIDs.
        name: Study name. Default: the folder name; for a zip, the folder inside it or else the
            zip's stem; for files, their common prefix (e.g. ``Brats18_CBICA_ABM_1``).
        max_voxels: Voxel budget per file; a larger header is refused before its data are read.
        affine_atol: Largest allowed entry-wise difference (mm) between the files' affines.
        load_truth: Read the segmentation file, when present, into ``Study.truth``.
        partial_mapping: Ignore mapping keys that name no file (or series) of this study, as when one
            mapping serves a batch of studies; by default such a key is refused as a likely typo.

    Returns:
        The study: float32 images keyed by modality, the T1 file's affine and (copied) header,
        source file names, sha256 of each file read, and the uint8 ground truth when present.

    Raises:
        StudyError: For a missing, duplicated or unrecognised file, a file that is not a 3-D NIfTI
            image, mismatched grids, non-finite values, an empty image, an oversized header, a
            corrupt gzip or zip, or unexpected segmentation labels. The message names the file.
    """
    common = {
        "mapping": mapping,
        "name": name,
        "max_voxels": max_voxels,
        "affine_atol": affine_atol,
        "load_truth": load_truth,
        "partial_mapping": partial_mapping,
    }
    return _load(source, same_grid=True, **common).to_study()


def load_native_study(
    source: StrPath | Sequence[StrPath],
    *,
    mapping: Mapping[str, str] | None = None,
    name: str | None = None,
    max_voxels: int = MAX_VOXELS,
    affine_atol: float = AFFINE_ATOL,
    load_truth: bool = True,
    partial_mapping: bool = False,
) -> RawStudy:
    """Load one study as it came from the scanner: each sequence on its own grid.

    Everything :func:`load_study` checks is checked, except that the four files (or DICOM series)
    may lie on different grids (and, for DICOM, in different frames of reference);
    :func:`brats_seg.harmonise.harmonise` brings them onto one. The arguments are those of
    :func:`load_study`; a study with a ground truth (read with ``load_truth``) must lie on one grid.

    Returns:
        The study, each sequence with its own affine and header.

    Raises:
        StudyError: As :func:`load_study`, except for grids that differ.
    """
    return _load(source, same_grid=False, mapping=mapping, name=name, max_voxels=max_voxels, affine_atol=affine_atol,
                 load_truth=load_truth, partial_mapping=partial_mapping)


def _load(source: StrPath | Sequence[StrPath], *, same_grid: bool, **common) -> RawStudy:
    """:func:`load_study` or :func:`load_native_study`, by ``same_grid``."""
    common["same_grid"] = same_grid
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.exists():
            raise StudyError(f"{path.name}: not found ({path}); expected a study folder, a .zip or files")
        if path.is_dir():
            if not _nifti_files(path) and not any(_nifti_files(p) for p in _subfolders(path)) and _has_dicom(path):
                return _load_dicom(path, default_name=path.name, where=path.name, **common)
            folder = _study_folder(path)
            return _load_files(_nifti_files(folder), default_name=folder.name, where=folder.name, **common)
        if _is_zip(path):
            with tempfile.TemporaryDirectory(prefix="brats_seg_zip_") as tmp:
                files, inner = _extract_zip(path, Path(tmp))
                stem = path.name[: -len(".zip")] if path.name.lower().endswith(".zip") else path.stem
                if not files:
                    root = Path(tmp)
                    _extract_zip(path, root, tree=True)
                    if _has_dicom(root):
                        top = [p for p in root.iterdir() if not _is_hidden(p.name)]
                        inner = top[0].name if len(top) == 1 and top[0].is_dir() else None
                        return _load_dicom(root, default_name=inner or stem, where=path.name, **common)
                return _load_files(files, default_name=inner or stem, where=path.name, **common)
        raise StudyError(
            f"{path.name}: a single file; expected a study folder, a .zip, or the 4 files "
            "(T1, T1CE, T2, FLAIR)"
        )
    if isinstance(source, bytes | bytearray):
        raise TypeError("load_study takes paths; use load_study_from_bytes for in-memory files")
    paths = [Path(p) for p in source]
    for path in paths:
        if not path.is_file():
            what = "a folder" if path.is_dir() else "nothing"
            raise StudyError(f"{path.name}: expected a NIfTI file, found {what} at {path}")
        if not _is_nifti_name(path.name):
            raise StudyError(f"{path.name}: expected a NIfTI file name ending in .nii or .nii.gz")
    return _load_files(paths, default_name=None, where="the given files", **common)


def _safe_name(raw: str) -> str:
    """The base name of an uploaded file name, refusing names with nothing left."""
    base = _basename(raw).strip()
    if base in ("", ".", "..") or any(ord(c) < 32 for c in base):
        raise StudyError(f"{raw!r}: not a usable file name; expected e.g. 'case_t1.nii.gz'")
    size = len(base.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        raise StudyError(
            f"{base[:40]}...{base[-20:]}: a file name of {size} bytes; expected at most {MAX_NAME_BYTES} "
            "(the longest name a file system keeps): rename the file"
        )
    return base


def load_study_from_bytes(files: Mapping[str, bytes], **kwargs) -> Study:
    """Load a study from in-memory files, as a dashboard upload gives them (see :func:`_from_bytes`)."""
    return _from_bytes(files, same_grid=True, **kwargs)  # type: ignore[return-value]


def load_native_study_from_bytes(files: Mapping[str, bytes], **kwargs) -> RawStudy:
    """:func:`load_native_study` for in-memory files: each sequence keeps its own grid (see :func:`_from_bytes`)."""
    return _from_bytes(files, same_grid=False, **kwargs)  # type: ignore[return-value]


def _from_bytes(
    files: Mapping[str, bytes],
    *,
    same_grid: bool,
    mapping: Mapping[str, str] | None = None,
    name: str | None = None,
    max_voxels: int = MAX_VOXELS,
    affine_atol: float = AFFINE_ATOL,
    load_truth: bool = True,
) -> Study:
    """Load a study from in-memory files, as a dashboard upload gives them.

    File names are never trusted: only their base names are used (``../../x_t1.nii.gz`` becomes
    ``x_t1.nii.gz``); hidden files (``.DS_Store``) are ignored. The files are written to a temporary
    folder and read with :func:`load_study`.

    Args:
        files: File name -> content (``bytes``, ``bytearray`` or ``memoryview``): the 4 or 5 NIfTI
            files of a study, or a single ``.zip``.
        same_grid: As :func:`load_study` (True) or as :func:`load_native_study` (False).
        mapping: As in :func:`load_study` (keys are reduced to base names too).
        name: Study name; by default the zip's folder or stem, or the files' common prefix.
        max_voxels: As in :func:`load_study`.
        affine_atol: As in :func:`load_study`.
        load_truth: As in :func:`load_study`.

    Returns:
        The validated study (a :class:`~brats_seg.types.RawStudy` without ``same_grid``).

    Raises:
        StudyError: As :func:`load_study`, and for an upload that mixes a zip with other files or
            holds files that are not NIfTI.
    """
    clean: dict[str, bytes] = {}
    for raw_name, data in files.items():
        base = _safe_name(raw_name)
        if _is_hidden(base):
            continue
        if base in clean:
            raise StudyError(f"{base}: uploaded twice; expected each file once")
        clean[base] = data
    if not clean:
        raise StudyError(
            "upload: no files; expected the 4 NIfTI files (T1, T1CE, T2, FLAIR) or one .zip (of NIfTI files or of "
            "the study's DICOM series)"
        )
    common = {
        "mapping": mapping,
        "name": name,
        "max_voxels": max_voxels,
        "affine_atol": affine_atol,
        "load_truth": load_truth,
        "partial_mapping": False,  # an upload is one study: a key that names no file is a mistake
    }
    zips = [n for n in clean if n.lower().endswith(".zip")]
    if zips and len(clean) > 1:
        raise StudyError(
            f"{', '.join(zips)}: uploaded with other files; expected either one .zip or the NIfTI files"
        )
    others = [n for n in clean if not n.lower().endswith(".zip") and not _is_nifti_name(n)]
    if others:
        raise StudyError(
            f"{', '.join(others)}: not a NIfTI file name; expected .nii or .nii.gz files or one .zip (for DICOM, "
            "zip the study's folder and upload the zip)"
        )
    with tempfile.TemporaryDirectory(prefix="brats_seg_upload_") as tmp:
        paths = []
        for base, data in clean.items():
            target = Path(tmp) / base
            try:
                target.write_bytes(data)
            except OSError as exc:  # the server's own trouble (disk full); its paths stay out of the message
                raise StudyError(f"{base}: the server could not store the upload ({exc.strerror or type(exc).__name__}); "
                                 "try again, or with fewer or smaller files") from None
            paths.append(target)
        raw = _load(paths[0] if zips else paths, same_grid=same_grid, **common)
    return raw.to_study() if same_grid else raw


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


#: How the hesitation map (:attr:`brats_seg.pipeline.Segmentation.uncertain`) is described in its header.
HESITATION_DESCRIPTION = "brats_seg hesitation 0/1: the label depends on the decision threshold"


def save_hesitation(uncertain: np.ndarray, like: LabelMap, path: StrPath) -> Path:
    """Write the hesitation map (1 where the label depends on the decision threshold) with ``like``'s geometry.

    A 0/1 uint8 NIfTI whose header says what it is (``descrip``, ``cal_max`` 1), so that a viewer
    does not colour it as BraTS labels.
    """
    mask = LabelMap(np.asarray(uncertain).astype(np.uint8), like.affine, like.header)
    return save_labels(mask, path, description=HESITATION_DESCRIPTION, cal_max=1)


def save_labels(labels: LabelMap, path: StrPath, *, description: str = "brats_seg labels 0/1/2/4", cal_max: int = 4) -> Path:
    """Write a label map as NIfTI with the geometry of its study.

    The header is a copy of the label map's (the study's T1 header), so shape, affine and the
    sform/qform matrices and codes are kept exactly; the data type becomes uint8 with
    ``scl_slope = 1``, ``scl_inter = 0``, ``cal_min``/``cal_max`` 0/4 and the NIfTI "label" intent.

    Args:
        labels: The label map (values 0-255, normally 0, 1, 2, 4).
        path: Output file. ``.nii.gz`` is appended when it ends neither in ``.nii`` nor ``.nii.gz``;
            parent folders are created.
        description: The header's ``descrip`` (at most 80 ASCII characters), e.g. for a 0/1 mask.
        cal_max: The header's display maximum (the largest value present wins), e.g. 1 for a mask.

    Returns:
        The path written.

    Raises:
        ValueError: When the array is not 3-D or holds values outside 0-255.
    """
    array = np.asarray(labels.array)
    if array.ndim != 3:
        raise ValueError(f"save_labels: expected a 3-D label map, found shape {array.shape}")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"save_labels: expected label values in 0-255, found {array.min()}..{array.max()}")
    out = Path(path)
    if not _is_nifti_name(out.name):
        out = out.with_name(out.name + ".nii.gz")
    out.parent.mkdir(parents=True, exist_ok=True)

    header = labels.header.copy()
    affine = np.asarray(labels.affine, dtype=np.float64)
    if not np.allclose(affine, header.get_best_affine(), rtol=0, atol=1e-6):
        sform_code = int(header["sform_code"]) or 2
        qform_code = int(header["qform_code"]) or sform_code
        header.set_sform(affine, code=sform_code)
        header.set_qform(affine, code=qform_code)
    header.set_data_shape(array.shape)
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1.0, 0.0)
    header["cal_min"], header["cal_max"] = 0, max(cal_max, int(array.max()) if array.size else cal_max)
    header.set_intent("label")
    header["descrip"] = description.encode("ascii")[:80]
    image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    image = image_class(array.astype(np.uint8), None, header=header)
    image.header.set_slope_inter(1.0, 0.0)
    suffix = _split_suffix(out.name)[1].lower()
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp{suffix}")  # write, then rename into place
    try:
        nib.save(image, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def save_image(image: np.ndarray, study: Study, path: StrPath) -> Path:
    """Write one sequence of ``study`` (float32) as NIfTI with the study's affine and header.

    Args:
        image: An array on the study's grid.
        study: The study whose geometry the file gets.
        path: Output file (``.nii.gz``); parent folders are created.

    Returns:
        The path written.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = study.header.copy()
    header.set_data_dtype(np.float32)
    nib.save(nib.Nifti1Image(np.asarray(image, dtype=np.float32), np.asarray(study.affine, dtype=np.float64), header), out)
    return out
