"""The DICOM image series inside a zip, listed from each member's first MiB (nothing extracted).

The dashboard lists an uploaded zip's series before the study is loaded, so that a person can map
them to sequences; :func:`zipped_series` reads only the headers for that.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import pydicom

from .dicom_read import MAX_DICOM_FILES
from .dicom_series import series_label
from .names import series_modality

__all__ = ["SERIES_HEADER_BYTES", "ZippedSeries", "zipped_series"]

#: Bytes of each zipped DICOM file read to list its series (headers with large private blocks fit).
SERIES_HEADER_BYTES: int = 1 << 20


@dataclass(frozen=True)
class ZippedSeries:
    """One MR image series in a zip: its UID, the sequence its description suggests, a label, its bytes."""

    uid: str
    modality: str | None
    label: str
    size: int


def _series_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> dict[str, str] | None:
    """A zipped DICOM file's series fields (from its first MiB), or None when it is no readable DICOM."""
    try:
        with archive.open(info) as f:
            head = f.read(132)
            if len(head) < 132 or head[128:132] != b"DICM":
                return None
            head += f.read(SERIES_HEADER_BYTES)
        ds = pydicom.dcmread(io.BytesIO(head), stop_before_pixels=True)
        return {
            "uid": str(ds.get("SeriesInstanceUID", "") or ""),
            "modality": str(ds.get("Modality", "MR") or "MR").upper(),
            "number": str(ds.get("SeriesNumber", "") or ""),
            "description": str(ds.get("SeriesDescription", "") or ds.get("ProtocolName", "") or ""),
        }
    except Exception:  # encrypted, unsupported compression or a damaged header: loading says which
        return None


@dataclass
class _Tally:
    number: str
    description: str
    files: int = 0
    size: int = 0


def zipped_series(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo]) -> list[ZippedSeries]:
    """The MR image series among a zip's members, ordered by series number.

    Members that are not DICOM, or whose header cannot be read, are left out here; loading the study
    says what is wrong with them.
    """
    series: dict[str, _Tally] = {}
    for info in members[: MAX_DICOM_FILES + 1]:
        head = _series_header(archive, info)
        if head is None or not head["uid"] or head["modality"] != "MR":
            continue
        tally = series.setdefault(head["uid"], _Tally(head["number"], head["description"]))
        tally.files += 1
        tally.size += info.file_size
    ordered = sorted(series.items(), key=lambda kv: (len(kv[1].number), kv[1].number, kv[0]))
    return [
        ZippedSeries(
            uid, series_modality(t.description), series_label(t.number, t.description, t.files), t.size
        )
        for uid, t in ordered
    ]
