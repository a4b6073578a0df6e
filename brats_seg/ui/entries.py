"""The files of an upload as the file list shows them: one entry per NIfTI file or DICOM series.

No widgets; the DICOM headers inside a zip are read by :func:`brats_seg.files.zipped_series`.
"""

from __future__ import annotations

import io as _io
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from ..files import NIFTI_SUFFIXES, detect_modality, zipped_series

__all__ = ["Entry", "is_hidden", "is_nifti_name", "list_entries", "upload_files", "zip_dicom_series"]


def upload_files(value: Any) -> dict[str, memoryview | bytes]:
    """File name -> content of a ``FileUpload.value``.

    Accepts the ipywidgets 8 format (a tuple of dicts with ``name`` and ``content``) and the
    ipywidgets 7 one (a dict keyed by name whose values hold ``content``).
    """
    if not value:
        return {}
    if isinstance(value, Mapping):
        items = [{"name": name, **dict(entry)} for name, entry in value.items()]
    else:
        items = [dict(entry) for entry in value]
    return {str(item["name"]): item["content"] for item in items}


@dataclass(frozen=True)
class Entry:
    """One file the user gave, as shown in the file list.

    Attributes:
        name: Base name (the key of the mapping passed to :func:`brats_seg.files.load_study_from_bytes`).
        detected: Sequence detected from the name (``T1``, ``T1CE``, ``T2``, ``FLAIR``, ``SEG``) or None.
        source: The uploaded file it comes from (the zip's name for a zip member).
        nifti: Whether it can be assigned a sequence (a NIfTI file or a DICOM series).
        size: Size in bytes (0 when unknown).
        label: What the file list shows (default: ``name``); for a DICOM series its number,
            description and file count, while ``name`` is its SeriesInstanceUID.
    """

    name: str
    detected: str | None
    source: str
    nifti: bool
    size: int = 0
    label: str = ""


def _basename(name: str) -> str:
    return PurePosixPath(str(name).replace("\\", "/")).name


def is_nifti_name(name: str) -> bool:
    """Whether a file name ends like a NIfTI file (and has a name before the suffix)."""
    return name.lower().endswith(NIFTI_SUFFIXES) and len(name) > 7


def is_hidden(part: str) -> bool:
    """Whether a path part is hidden (``.name``) or macOS's ``__MACOSX`` (brats_seg.files skips them)."""
    return part.startswith(".") or part == "__MACOSX"


def _zip_entries(name: str, data: bytes) -> list[Entry]:
    """The NIfTI members of a zip, or else its DICOM series (a zip that cannot be read: ValueError etc.)."""
    entries: list[Entry] = []
    others = []
    with zipfile.ZipFile(_io.BytesIO(data)) as archive:
        for info in archive.infolist():
            parts = [p for p in re.split(r"[\\/]+", info.filename) if p not in ("", ".")]
            if info.is_dir() or not parts or any(is_hidden(p) for p in parts):
                continue
            if is_nifti_name(parts[-1]):
                entries.append(Entry(parts[-1], detect_modality(parts[-1]), name, True, info.file_size))
            else:
                others.append(info)
        if not entries:
            entries = zip_dicom_series(archive, others, name)
    return entries


def list_entries(files: Mapping[str, bytes | memoryview]) -> list[Entry]:
    """The files of an upload, zip members listed one by one, with their detected sequence.

    Hidden files and ``__MACOSX`` are left out, as :mod:`brats_seg.files` ignores them. A zip that
    cannot be read is listed as one non-NIfTI entry (loading it then says what is wrong).
    """
    entries: list[Entry] = []
    for raw_name, data in files.items():
        name = _basename(raw_name)
        if not name or is_hidden(name):
            continue
        if name.lower().endswith(".zip"):
            try:
                entries += _zip_entries(name, bytes(data))
            except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError, RuntimeError):
                entries.append(Entry(name, None, name, False, len(data)))
            continue
        nifti = is_nifti_name(name)
        entries.append(Entry(name, detect_modality(name) if nifti else None, name, nifti, len(data)))
    return entries


def zip_dicom_series(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], source: str) -> list[Entry]:
    """One entry per MR image series among a zip's DICOM members (:func:`brats_seg.files.zipped_series`)."""
    return [Entry(s.uid, s.modality, source, True, s.size, s.label) for s in zipped_series(archive, members)]
