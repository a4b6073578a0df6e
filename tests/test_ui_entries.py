"""Tests for :mod:`brats_seg.ui.entries`: the upload's files as the file list shows them."""

from __future__ import annotations

import io as _io
import zipfile
from pathlib import Path

from test_ui_support import upload_value

from brats_seg.ui.entries import list_entries, upload_files

#: The shared fixtures (``app``, ``tiny_paths``, and no test reaching the public example address).
pytest_plugins = ["test_ui_support"]


def test_upload_files_accepts_both_ipywidgets_formats() -> None:
    assert upload_files(upload_value({"a_t1.nii.gz": b"x"})) == {"a_t1.nii.gz": memoryview(b"x")}
    assert upload_files({"a.nii": {"content": b"y"}}) == {"a.nii": b"y"}
    assert upload_files(()) == {}


def test_list_entries_reads_zip_members_like_io(tiny_paths: dict[str, Path]) -> None:
    buffer = _io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for p in tiny_paths.values():
            z.write(p, f"Tiny_001/{p.name}")
        z.writestr("__MACOSX/Tiny_001/._Tiny_001_t1.nii.gz", b"junk")
        z.writestr("Tiny_001/.DS_Store", b"junk")
        z.writestr("Tiny_001/notes.txt", b"hello")
    entries = list_entries({"study.zip": buffer.getvalue()})
    assert sorted((e.name, e.detected) for e in entries) == sorted((p.name, m) for m, p in tiny_paths.items())
    assert all(e.source == "study.zip" and e.nifti for e in entries)
    assert list_entries({"broken.zip": b"PK nonsense"})[0].nifti is False
