"""Zip archives: extract a study's members safely (no escaping paths, links or zip bombs).

:func:`extract_nifti` flattens a zip's NIfTI files into a folder (one study: one folder inside the
zip, or the files at its top level); :func:`extract_tree` extracts every member with its relative
path (DICOM series folders, whose files often share names such as ``IM0001``). Both refuse what a
hostile zip may hold with a :class:`~brats_seg.errors.StudyError` naming the zip.

Example::

    files, inner = extract_nifti(Path("upload.zip"), Path(tmp))
"""

from __future__ import annotations

import re
import zipfile
import zlib
from collections import Counter
from pathlib import Path

from ..errors import StudyError
from .names import is_hidden, is_nifti_name

__all__ = ["MAX_ZIP_BYTES", "extract_nifti", "extract_tree", "is_zip"]

#: Budget for the total uncompressed size of a zip's members: 2 GiB (five 240x240x155 float32
#: volumes take about 180 MB). A larger zip is refused as a possible zip bomb.
MAX_ZIP_BYTES: int = 2 * 1024**3

_Member = tuple[zipfile.ZipInfo, list[str]]  # a member and its path components


def is_zip(path: Path) -> bool:
    """Whether ``path`` is named ``.zip`` or starts like a zip archive."""
    if path.suffix.lower() == ".zip":
        return True
    try:
        with path.open("rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def extract_nifti(zip_path: Path, dest: Path) -> tuple[list[Path], str | None]:
    """Extract the NIfTI members of a zip, flattened, into ``dest``.

    ``__MACOSX/`` and hidden files are ignored, as are members that are not NIfTI files.

    Returns:
        The extracted files and the name of the folder that held them inside the zip (None when
        they sat at the top level).

    Raises:
        StudyError: For an invalid zip, an escaping member path, a symbolic link, a total
            uncompressed size above :data:`MAX_ZIP_BYTES`, NIfTI files in several folders or twice,
            or a member that cannot be extracted.
    """
    zname = zip_path.name
    with _open(zip_path) as archive:
        members, total = _members(archive, zname, tree=False)
        _check_total(zname, total)
        folders = sorted({"/".join(parts[:-1]) for _, parts in members})
        if len(folders) > 1:
            shown = ", ".join(f"{f or '.'}/" for f in folders[:5]) + (", ..." if len(folders) > 5 else "")
            raise StudyError(
                f"{zname}: holds NIfTI files in {len(folders)} folders ({shown}); expected one study "
                "(one folder, or the files at the top level)"
            )
        basenames = Counter(parts[-1] for _, parts in members)
        dupes = sorted(b for b, n in basenames.items() if n > 1)
        if dupes:
            raise StudyError(f"{zname}: member {dupes[0]!r} appears more than once; expected unique files")
        out = _copy(archive, zname, [(info, dest / parts[-1]) for info, parts in members])
    inner = folders[0].split("/")[-1] if folders and folders[0] else None
    return sorted(out), inner


def extract_tree(zip_path: Path, dest: Path, *, max_files: int, max_depth: int) -> None:
    """Extract every member of a zip (hidden ones and ``__MACOSX/`` left out) with its relative path.

    Args:
        zip_path: The zip.
        dest: Where its tree is written.
        max_files: Most members extracted (:data:`~brats_seg.files.dicom_read.MAX_DICOM_FILES`).
        max_depth: Most folder levels below a study folder
            (:data:`~brats_seg.files.dicom_read.MAX_DICOM_DEPTH`); members may lie two deeper.

    Raises:
        StudyError: As :func:`extract_nifti`, and for too many members or too deep or long paths.
    """
    zname = zip_path.name
    with _open(zip_path) as archive:
        members, total = _members(archive, zname, tree=True)
        if len(members) > max_files:
            raise StudyError(
                f"{zname}: holds {len(members):,} files; expected the series of one study (at most "
                f"{max_files:,} files, MAX_DICOM_FILES)"
            )
        too_deep = (
            info.filename
            for info, parts in members
            if len(parts) > max_depth + 2 or len(info.filename) > 1024
        )
        deep = next(too_deep, None)
        if deep is not None:
            raise StudyError(
                f"{zname}: member {deep[:80]!r} lies too deep or has too long a name; expected a study "
                f"folder with series folders (at most {max_depth + 2} levels)"
            )
        _check_total(zname, total)
        _copy(archive, zname, [(info, dest.joinpath(*parts)) for info, parts in members])


def _open(zip_path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError, RuntimeError) as exc:
        # NotImplementedError: a member that needs a newer zip version (found by the fuzzer)
        raise StudyError(
            f"{zip_path.name}: not a valid zip file ({exc}); expected a .zip of one study"
        ) from exc


def _member_parts(zip_name: str, member: str) -> list[str]:
    """Path components of a zip member; refuse paths that escape the archive folder."""
    parts = re.split(r"[\\/]+", member)
    if member.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", member) or ".." in parts:
        raise StudyError(
            f"{zip_name}: member {member!r} has a path outside the archive folder (absolute or with "
            "'..'); expected relative paths inside the zip, so the zip was refused"
        )
    return [p for p in parts if p not in ("", ".")]


def _members(archive: zipfile.ZipFile, zname: str, *, tree: bool) -> tuple[list[_Member], int]:
    """The members to extract (every file with ``tree``, else NIfTI files), and all members' unpacked size.

    Every member's path is checked first; hidden members and ``__MACOSX/`` are left out; a symbolic
    link is refused.
    """
    members: list[_Member] = []
    total = 0
    for info in archive.infolist():
        parts = _member_parts(zname, info.filename)
        if info.is_dir() or not parts:
            continue
        total += info.file_size
        if parts[0] == "__MACOSX" or any(is_hidden(p) for p in parts):
            continue
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise StudyError(
                f"{zname}: member {info.filename!r} is a symbolic link; expected regular files only"
            )
        if tree or is_nifti_name(parts[-1]):
            members.append((info, parts))
    return members, total


def _check_total(zname: str, total: int) -> None:
    """Refuse members that the zip says unpack to more than :data:`MAX_ZIP_BYTES`."""
    if total > MAX_ZIP_BYTES:
        raise StudyError(
            f"{zname}: the zip's members uncompress to {total:,} bytes; expected at most "
            f"{MAX_ZIP_BYTES:,} bytes (MAX_ZIP_BYTES), so it was refused as a possible zip bomb"
        )


def _copy(archive: zipfile.ZipFile, zname: str, targets: list[tuple[zipfile.ZipInfo, Path]]) -> list[Path]:
    """Write each member to its target, counting the bytes actually unpacked against :data:`MAX_ZIP_BYTES`."""
    written = 0
    out: list[Path] = []
    for info, target in targets:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, target.open("wb") as dst:
                for chunk in iter(lambda src=src: src.read(1 << 20), b""):
                    written += len(chunk)
                    if written > MAX_ZIP_BYTES:
                        raise StudyError(
                            f"{zname}: members uncompress to more than {MAX_ZIP_BYTES:,} bytes "
                            "(MAX_ZIP_BYTES); refused as a possible zip bomb"
                        )
                    dst.write(chunk)
        except StudyError:
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError, OSError) as exc:
            raise StudyError(
                f"{zname}: cannot extract {info.filename!r} ({exc}); expected an intact, unencrypted zip"
            ) from exc
        out.append(target)
    return out
