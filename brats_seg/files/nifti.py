"""NIfTI files: read one study's files (headers checked before data), write label maps and images.

:func:`load_nifti_study` assigns a study's files to T1, T1CE, T2, FLAIR (and a ground truth), reads
and checks every header before any image data (so an oversized or malformed file is refused without
allocating its volume), then reads the data. :func:`save_labels`, :func:`save_uncertain` and
:func:`save_image` write arrays back with the study's geometry.

Example::

    info = read_header(Path("case_t1.nii.gz"), max_voxels=MAX_VOXELS)   # checked, no data read
    data, header, affine, sha256 = read_data(info)
    save_labels(labels, "out/case_seg.nii.gz")
"""

from __future__ import annotations

import hashlib
import math
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from ..errors import StudyError
from ..types import MODALITIES, LabelMap, RawStudy, Study
from .checks import MAX_PIXDIM_MM, check_finite, check_geometry, check_grid, check_image_content, to_labels
from .names import SEG, assign_files, infer_study_name, is_nifti_name, normalise_mapping, split_suffix

__all__ = [
    "UNCERTAIN_DESCRIPTION",
    "NiftiHeader",
    "load_nifti_study",
    "read_data",
    "read_header",
    "save_image",
    "save_labels",
    "save_uncertain",
    "sha256_file",
]

StrPath = str | os.PathLike[str]

_GZIP_MAGIC = b"\x1f\x8b"
_HEAD_BYTES = 64 * 1024  # compressed bytes read to decode a header


# --------------------------------------------------------------------------------------------------
# Reading one NIfTI file
# --------------------------------------------------------------------------------------------------


def sha256_file(path: StrPath) -> str:
    """Hex sha256 digest of a file's bytes.

    Args:
        path: The file.

    Returns:
        The 64-character lower-case hex digest.
    """
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass
class NiftiHeader:
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
        """The file's base name, as messages give it."""
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


def read_header(path: Path, *, max_voxels: int) -> NiftiHeader:
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
            f"{name}: the header's vox_offset is {vox_offset:g}; the NIfTI standard requires at least "
            f"{header_size + 4} "
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
    return NiftiHeader(path, header, image_class, shape, affine, gzipped, expected, file_size)


def read_data(info: NiftiHeader) -> tuple[np.ndarray, nib.Nifti1Header, np.ndarray, str]:
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


# --------------------------------------------------------------------------------------------------
# Reading one study
# --------------------------------------------------------------------------------------------------


def load_nifti_study(
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

    Args:
        paths: The study's NIfTI files.
        mapping: File base name -> modality, as in :func:`~brats_seg.files.study.load_study`.
        name: The study's name; else ``default_name``; else one inferred from the file names.
        default_name: The folder's or zip's name, when there is one.
        where: How messages name the whole input.
        max_voxels: Voxel budget per file, checked on the header.
        affine_atol: Largest entry-wise difference (mm) between affines on one grid.
        load_truth: Read the segmentation file, when there is one.
        partial_mapping: Ignore mapping keys that name none of ``paths``.
        same_grid: Require one grid (see above).

    Returns:
        The study, each sequence with its own affine and header copy.

    Raises:
        StudyError: For any problem with the files, naming the file.
    """
    assigned = assign_files(paths, normalise_mapping(mapping), where, partial=partial_mapping)
    read = [*MODALITIES, *([SEG] if load_truth and SEG in assigned else [])]
    headers = {m: read_header(assigned[m], max_voxels=max_voxels) for m in read}
    ref = headers["T1"]
    if same_grid or SEG in headers:  # a ground truth is compared voxel by voxel: it needs one grid
        for modality in list(headers)[1:]:
            check_grid(ref, headers[modality], affine_atol=affine_atol)
    study_name = name or default_name or infer_study_name(list(assigned.values()))
    return _read_study(headers, name=study_name)


def _read_study(headers: Mapping[str, NiftiHeader], *, name: str) -> RawStudy:
    """Read the data of checked headers (modality -> header, ``SEG`` for a ground truth) into a study."""
    images: dict[str, np.ndarray] = {}
    affines: dict[str, np.ndarray] = {}
    nifti_headers: dict[str, nib.Nifti1Header] = {}
    sha256: dict[str, str] = {}
    truth: np.ndarray | None = None
    for modality, info in headers.items():
        data, header, affine, digest = read_data(info)
        check_finite(info.name, data)
        sha256[modality] = digest
        if modality == SEG:
            truth = to_labels(info.name, data)
            continue
        check_image_content(info.name, modality, data)
        images[modality], affines[modality], nifti_headers[modality] = data, affine, header
    return RawStudy(
        name=name,
        images=images,
        affines=affines,
        headers=nifti_headers,
        sources={m: info.name for m, info in headers.items()},
        truth=truth,
        sha256=sha256,
    )


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


#: How the uncertain map (:attr:`brats_seg.pipeline.Segmentation.uncertain`) is described in its header.
UNCERTAIN_DESCRIPTION = "brats_seg uncertain 0/1: the label depends on the decision threshold"


def save_uncertain(uncertain: np.ndarray, like: LabelMap, path: StrPath) -> Path:
    """Write the uncertain map (1 where the label depends on the decision threshold) with ``like``'s geometry.

    A 0/1 uint8 NIfTI whose header says what it is (``descrip``, ``cal_max`` 1), so that a viewer
    does not colour it as BraTS labels.
    """
    mask = LabelMap(np.asarray(uncertain).astype(np.uint8), like.affine, like.header)
    return save_labels(mask, path, description=UNCERTAIN_DESCRIPTION, cal_max=1)


def save_labels(
    labels: LabelMap, path: StrPath, *, description: str = "brats_seg labels 0/1/2/4", cal_max: int = 4
) -> Path:
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
    if not is_nifti_name(out.name):
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
    suffix = split_suffix(out.name)[1].lower()
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
    nib.save(
        nib.Nifti1Image(
            np.asarray(image, dtype=np.float32), np.asarray(study.affine, dtype=np.float64), header
        ),
        out,
    )
    return out
