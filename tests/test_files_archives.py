"""Tests for ``brats_seg.files.archives``: zips that are refused, each with a message naming the zip."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest
from helpers import err

from brats_seg.errors import StudyError
from brats_seg.files import archives, load_study, load_study_from_bytes

# --------------------------------------------------------------------------------------------------
# Errors: 8. zips
# --------------------------------------------------------------------------------------------------


def _zip_study(paths: dict[str, Path], archive: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in paths.values():
            zf.write(path, path.name)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return archive


@pytest.mark.parametrize(
    "member", ["../evil_t1.nii.gz", "/etc/evil_t1.nii.gz", "a/../../x.txt", "C:/evil.txt"]
)
def test_error_zip_member_escapes(tiny_study, tmp_path: Path, member: str) -> None:
    archive = _zip_study(tiny_study(), tmp_path / "bad.zip", {member: b"x"})
    with pytest.raises(StudyError, match=err("bad.zip", f"{re.escape(member)}.*outside the archive folder")):
        load_study(archive)


def test_error_not_a_zip(tmp_path: Path) -> None:
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"this is not a zip file at all")
    with pytest.raises(StudyError, match=err("broken.zip", "not a valid zip file")):
        load_study(archive)
    with pytest.raises(StudyError, match=err("broken.zip", "not a valid zip file")):
        load_study_from_bytes({"broken.zip": b"PK\x03\x04 truncated"})


def test_error_zip_bomb_budget(tiny_study, tmp_path: Path, monkeypatch) -> None:
    archive = _zip_study(tiny_study(), tmp_path / "big.zip")
    monkeypatch.setattr(archives, "MAX_ZIP_BYTES", 10_000)
    with pytest.raises(StudyError, match=err("big.zip", r"expected at most 10,000 bytes.*zip bomb")):
        load_study(archive)


def test_error_zip_several_folders(tiny_study, tmp_path: Path) -> None:
    paths = tiny_study()
    archive = tmp_path / "two.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in paths.values():
            zf.write(path, f"A/{path.name}")
            zf.write(path, f"B/{path.name}")
    with pytest.raises(StudyError, match=err("two.zip", r"NIfTI files in 2 folders \(A/, B/\)")):
        load_study(archive)


def test_error_zip_without_nifti(tmp_path: Path) -> None:
    archive = tmp_path / "docs.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("readme.txt", b"hello")
    with pytest.raises(StudyError, match=err("docs.zip", "no NIfTI files")):
        load_study(archive)


def test_error_zip_corrupt_member(tiny_study, tmp_path: Path) -> None:
    paths = tiny_study()
    archive = _zip_study(paths, tmp_path / "crc.zip")
    raw = bytearray(archive.read_bytes())
    offset = raw.find(paths["T1"].read_bytes()[100:140])
    raw[offset : offset + 8] = b"XXXXXXXX"  # stored member: corrupt its bytes, CRC no longer matches
    archive.write_bytes(bytes(raw))
    with pytest.raises(StudyError, match=err("crc.zip", "cannot extract.*Bad CRC")):
        load_study(archive)
