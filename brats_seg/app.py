"""The Voilà dashboard: upload one study, predict, review the labels over the scan, download.

``app.ipynb`` holds only ``App().widget``; everything here is testable without a browser::

    app = App(model_dir="model/", synchronous=True)
    app.upload.value = (...)            # as the browser sends files (ipywidgets 8 format)
    app.predict_button.click()          # runs the prediction (in a thread unless synchronous)
    app.volumes_shown()["WT"]           # {"prediction": mL, ...} as displayed

Widgets only: loading and validating files is :mod:`brats_seg.io`, the prediction
:func:`brats_seg.pipeline.segment`, the numbers :mod:`brats_seg.report` and :mod:`brats_seg.metrics`,
the images :mod:`brats_seg.viz`. Torch is imported only when the model is loaded (in the background),
so the page opens fast.

Configuration (keyword arguments win over environment variables):

* ``BRATS_SEG_MODEL``: model folder (``model.json`` + exported learner); default the bundled ``model/``.
* ``BRATS_SEG_EXAMPLE_DIR``: a local study folder loaded by "Load example" (no download).
* ``BRATS_SEG_EXAMPLE_URL``: base address of the example's files (default: the DeepBrainSeg
  repository's copy of ``Brats18_CBICA_ABM_1``); each file is checked against its pinned sha256.
* ``BRATS_SEG_CACHE``: where downloaded examples are kept (default ``~/.cache/brats_seg``).
* ``BRATS_SEG_TORCH_THREADS``: CPU threads torch uses in this kernel (default: one per core).

Stable CSS classes for browser tests: ``brats-app``, ``brats-model-status``, ``brats-upload``,
``brats-example``, ``brats-example-note``, ``brats-files``, ``brats-file-row``, ``brats-modality``, ``brats-predict``,
``brats-keep-parts``, ``brats-quick``, ``brats-progress``, ``brats-progress-label``, ``brats-message``, ``brats-review``, ``brats-background``,
``brats-overlay-mode``, ``brats-opacity``, ``brats-contrast``, ``brats-window``, ``brats-crosshair``,
``brats-toggle-ncr`` / ``-ed`` / ``-et``, ``brats-legend-errors``, ``brats-view-axial`` /
``-coronal`` / ``-sagittal``, ``brats-slider-axial`` / ``-coronal`` / ``-sagittal``,
``brats-volumes``, ``brats-metrics``, ``brats-downloads``, ``brats-refresh-png``, ``brats-scroller``.
"""

from __future__ import annotations

import base64
import hashlib
import html
import http.client
import io as _io
import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import ipyevents
import ipywidgets as widgets

from . import io, quality, report, viz
from .app_harmonise import HarmonisePanel
from .card import interval_line, postprocess_line, scores_line
from .errors import ModelError, StudyError
from .server import session_temp_dir
from .turns import Turns
from .types import LABEL_NAMES, MODALITIES, Study

if TYPE_CHECKING:
    from .harmonise import Harmonised

__all__ = [
    "CACHE_ENV",
    "EXAMPLE_CASE",
    "EXAMPLE_DIR_ENV",
    "EXAMPLE_FILES",
    "EXAMPLE_URL",
    "EXAMPLE_URL_ENV",
    "SCROLL_TO_REVIEW_JS",
    "App",
    "Entry",
    "ExampleError",
    "ExampleUnreachable",
    "data_uri_link",
    "default_cache_dir",
    "fetch_example",
    "javascript_output",
    "list_entries",
    "model_status_html",
    "parse_links",
    "parse_table",
    "read_study_folder",
    "scores_html",
    "upload_files",
    "volumes_html",
]

log = logging.getLogger("brats_seg.app")

#: The example study and where it can be downloaded (a public copy of a BraTS 2018 training case).
EXAMPLE_CASE = "Brats18_CBICA_ABM_1"
EXAMPLE_URL = (
    "https://raw.githubusercontent.com/koriavinash1/DeepBrainSeg/master/sample_volume/brats/" + EXAMPLE_CASE
)
#: File name -> pinned sha256 of the example's files (four sequences and the expert segmentation).
EXAMPLE_FILES: dict[str, str] = {
    f"{EXAMPLE_CASE}_flair.nii.gz": "f85db3a4614dffc4e03e97d7d18d1ecb7d4522a4a5cf3c9bbca7bd428ce97e4c",
    f"{EXAMPLE_CASE}_t1.nii.gz": "771df355c26e002ce5fbcc6d0beeca6ca61d645ae02b718d153a9a3e2c108914",
    f"{EXAMPLE_CASE}_t1ce.nii.gz": "e738fc627825b7a57ea5869419cd345bc7b4fcaf6dbba50ba392ac17dc34e31f",
    f"{EXAMPLE_CASE}_t2.nii.gz": "602f1afbed3871fe866b2ff5cdb0f5758ad99c55f1e97c60579aa5aaa03d7c4c",
    f"{EXAMPLE_CASE}_seg.nii.gz": "e44e0c587f473b47af44503a3fff8d455776c55e8c466419bd130759bde05d32",
}
EXAMPLE_DIR_ENV = "BRATS_SEG_EXAMPLE_DIR"
EXAMPLE_URL_ENV = "BRATS_SEG_EXAMPLE_URL"
CACHE_ENV = "BRATS_SEG_CACHE"

#: Largest example file accepted from a download (bytes).
MAX_DOWNLOAD_BYTES = 200 * 1024**2

#: Dropdown choices for a file's sequence: (label, value). "" means "not chosen yet".
MODALITY_CHOICES: tuple[tuple[str, str], ...] = (
    ("choose...", ""),
    ("T1", "T1"),
    ("T1CE (T1 + contrast)", "T1CE"),
    ("T2", "T2"),
    ("FLAIR", "FLAIR"),
    ("ground truth (seg)", io.SEG),
    ("ignore", "IGNORE"),
)

OVERLAY_CHOICES: dict[str, str] = {
    "prediction": "prediction",
    "truth": "ground truth",
    "errors": "errors (FP red, FN blue)",
    "uncertain": "where it hesitates",
    "none": "none",
}

_CSS = """
<style>
.brats-app { max-width: 1400px; }
.brats-app h2, .brats-app h3 { margin: 0.4em 0 0.2em 0; }
.brats-msg { padding: 6px 10px; border-radius: 4px; white-space: pre-wrap; font-family: inherit; }
.brats-msg-error { background: #fde8e8; border: 1px solid #e0a0a0; color: #7a1010; }
.brats-msg-info { background: #eef5ff; border: 1px solid #a8c4e8; color: #123; }
.brats-msg-warning { background: #fff6e0; border: 1px solid #e0c080; color: #5a3a00; margin-top: 4px; }
.brats-table { border-collapse: collapse; margin: 4px 12px 4px 0; }
.brats-table th, .brats-table td { border: 1px solid #ccc; padding: 2px 8px; text-align: left; }
.brats-table td.num { text-align: right; font-variant-numeric: tabular-nums; }
.brats-range-note { font-size: 85%; color: #555; max-width: 36em; line-height: 1.35; margin: 2px 12px 4px 0; }
.brats-swatch { display: inline-block; width: 14px; height: 14px; border: 1px solid #333;
                vertical-align: middle; margin-right: 4px; }
.brats-view-axial, .brats-view-coronal, .brats-view-sagittal { width: 100%; height: auto; }
.brats-download { margin-right: 24px; white-space: nowrap; }
.brats-download a { color: #1a56b0; text-decoration: underline; }
</style>
"""


class ExampleError(RuntimeError):
    """The example study could not be fetched or read (network, address, or sha256 mismatch)."""


class ExampleUnreachable(ExampleError):
    """The example's server could not be reached, or did not serve the file (no network, a firewall,
    a refused connection, a timeout, an HTTP error): trying again from this server will fail again.

    Attributes:
        url: The address that was asked.
        reason: What urllib said, in words.
    """

    def __init__(self, message: str, *, url: str, reason: str) -> None:
        super().__init__(message)
        self.url = url
        self.reason = reason


# --------------------------------------------------------------------------------------------------
# Pure helpers (no widgets)
# --------------------------------------------------------------------------------------------------


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
        name: Base name (the key of the mapping passed to :func:`brats_seg.io.load_study_from_bytes`).
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


def _is_nifti(name: str) -> bool:
    return name.lower().endswith(io.NIFTI_SUFFIXES) and len(name) > 7


def _hidden(part: str) -> bool:
    return part.startswith(".") or part == "__MACOSX"


def list_entries(files: Mapping[str, bytes | memoryview]) -> list[Entry]:
    """The files of an upload, zip members listed one by one, with their detected sequence.

    Hidden files and ``__MACOSX`` are left out, as :mod:`brats_seg.io` ignores them. A zip that
    cannot be read is listed as one non-NIfTI entry (loading it then says what is wrong).
    """
    entries: list[Entry] = []
    for raw_name, data in files.items():
        name = _basename(raw_name)
        if not name or _hidden(name):
            continue
        if name.lower().endswith(".zip"):
            try:
                with zipfile.ZipFile(_io.BytesIO(bytes(data))) as archive:
                    others = []
                    found = False
                    for info in archive.infolist():
                        parts = [p for p in re.split(r"[\\/]+", info.filename) if p not in ("", ".")]
                        if info.is_dir() or not parts or any(_hidden(p) for p in parts):
                            continue
                        if _is_nifti(parts[-1]):
                            found = True
                            entries.append(
                                Entry(parts[-1], io.detect_modality(parts[-1]), name, True, info.file_size)
                            )
                        else:
                            others.append(info)
                    if not found:
                        entries += _dicom_series_entries(archive, others, name)
            except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError, RuntimeError):
                entries.append(Entry(name, None, name, False, len(data)))
            continue
        nifti = _is_nifti(name)
        entries.append(Entry(name, io.detect_modality(name) if nifti else None, name, nifti, len(data)))
    return entries


#: Bytes of each zipped DICOM file read to list its series (headers with large private blocks fit).
_SERIES_HEADER_BYTES: int = 1 << 20


def _dicom_series_entries(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], source: str) -> list[Entry]:
    """One entry per MR image series among a zip's DICOM members (from each member's first MiB).

    Members that are not DICOM, or whose header cannot be read, are left out here; loading the
    study says what is wrong with them.
    """
    import pydicom

    from .dicom import MAX_DICOM_FILES, series_label, series_modality

    series: dict[str, dict[str, Any]] = {}
    for info in members[: MAX_DICOM_FILES + 1]:
        try:
            with archive.open(info) as f:
                head = f.read(132)
                if len(head) < 132 or head[128:132] != b"DICM":
                    continue
                head += f.read(_SERIES_HEADER_BYTES)
            ds = pydicom.dcmread(_io.BytesIO(head), stop_before_pixels=True)
            uid = str(ds.get("SeriesInstanceUID", "") or "")
            modality = str(ds.get("Modality", "MR") or "MR").upper()
            number = str(ds.get("SeriesNumber", "") or "")
            description = str(ds.get("SeriesDescription", "") or ds.get("ProtocolName", "") or "")
        except Exception:  # encrypted, unsupported compression or a damaged header: loading says which
            continue
        if not uid or modality != "MR":
            continue
        entry = series.setdefault(uid, {"files": 0, "size": 0, "number": number, "description": description})
        entry["files"] += 1
        entry["size"] += info.file_size
    out = []
    for uid, e in sorted(series.items(), key=lambda kv: (len(kv[1]["number"]), kv[1]["number"], kv[0])):
        label = series_label(e["number"], e["description"], e["files"])
        out.append(Entry(uid, series_modality(e["description"]), source, True, e["size"], label))
    return out


def default_cache_dir() -> Path:
    """``$BRATS_SEG_CACHE``, else ``$XDG_CACHE_HOME/brats_seg``, else ``~/.cache/brats_seg``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "brats_seg"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


#: Errors of reaching a server or reading its answer (``URLError``, ``HTTPError`` and timeouts are OSErrors).
_NETWORK_ERRORS: tuple[type[BaseException], ...] = (OSError, http.client.HTTPException)


def _unreachable(name: str, url: str, exc: BaseException) -> ExampleUnreachable:
    """The ExampleUnreachable for a failed request of ``url``, with urllib's reason in words."""
    reason = str(getattr(exc, "reason", None) or exc or type(exc).__name__)
    return ExampleUnreachable(
        f"could not download the example file {name} from {url} ({reason}). Check the network "
        f"connection, or set {EXAMPLE_DIR_ENV} to a local copy of the example study.",
        url=url,
        reason=reason,
    )


def _chunks(response: Any, name: str, url: str) -> Iterator[bytes]:
    """The body of a urllib response in 1 MiB pieces; a transfer that breaks off is ExampleUnreachable."""
    while True:
        try:
            chunk = response.read(1 << 20)
        except _NETWORK_ERRORS as exc:
            raise _unreachable(name, url, exc) from exc
        if not chunk:
            return
        yield chunk


def _download(url: str, name: str, target: Path, timeout: float) -> str:
    """Download ``url`` into ``target`` (at most :data:`MAX_DOWNLOAD_BYTES`); returns its sha256.

    Raises:
        ExampleUnreachable: When the server cannot be reached, answers with an error, or the
            transfer breaks off.
        ExampleError: When the address is not a URL urllib can open, ``target`` cannot be written,
            or the file is larger than :data:`MAX_DOWNLOAD_BYTES`.
    """
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except ValueError as exc:  # the address itself is wrong: a setting to fix, not a network failure
        raise ExampleError(
            f"the example address {url!r} cannot be opened ({exc}); expected an https://, http:// or "
            f"file:// address ({EXAMPLE_URL_ENV})"
        ) from exc
    except _NETWORK_ERRORS as exc:
        raise _unreachable(name, url, exc) from exc
    digest = hashlib.sha256()
    size = 0
    with response:
        try:
            with target.open("wb") as dst:
                for chunk in _chunks(response, name, url):
                    size += len(chunk)
                    if size > MAX_DOWNLOAD_BYTES:
                        raise ExampleError(
                            f"{name}: the download from {url} exceeds {MAX_DOWNLOAD_BYTES:,} bytes; refused"
                        )
                    digest.update(chunk)
                    dst.write(chunk)
        except ExampleError:
            raise
        except OSError as exc:  # the transfer's own errors are ExampleUnreachable already: this is the disk
            raise ExampleError(f"cannot write {target} in the example cache ({exc})") from exc
    return digest.hexdigest()


def fetch_example(
    base_url: str = EXAMPLE_URL,
    *,
    files: Mapping[str, str] = EXAMPLE_FILES,
    cache_dir: str | Path | None = None,
    timeout: float = 60.0,
) -> dict[str, Path]:
    """Download the example study's files (once: they are cached) and check their sha256.

    Args:
        base_url: Address of the folder holding the files; ``{base_url}/{name}`` is fetched with
            urllib (``https://``, ``http://`` or ``file://``).
        files: File name -> expected sha256.
        cache_dir: Folder for the cached files (default :func:`default_cache_dir`); they are kept in
            its ``examples/`` subfolder and reused while their sha256 matches.
        timeout: Seconds to wait for the server.

    Returns:
        File name -> path of the verified file.

    Raises:
        ExampleUnreachable: When the server cannot be reached or does not serve a file (see
            :func:`_download`).
        ExampleError: When the address is malformed, the cache cannot be written, a file is too large,
            or its sha256 differs from the pinned one (the downloaded file is then discarded).
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = folder / "examples"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExampleError(f"cannot create the cache folder {folder} ({exc})") from exc
    out: dict[str, Path] = {}
    for name, expected in files.items():
        target = folder / name
        if target.is_file() and _sha256(target) == expected:
            out[name] = target
            continue
        url = f"{base_url.rstrip('/')}/{name}"
        tmp = folder / f".{name}.{os.getpid()}.{threading.get_ident()}.part"
        try:
            actual = _download(url, name, tmp, timeout)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if actual != expected:
            tmp.unlink(missing_ok=True)
            raise ExampleError(
                f"{name}: the file downloaded from {url} has sha256 {actual}, expected {expected}; "
                "it was discarded (the address may serve a different or damaged file)."
            )
        os.replace(tmp, target)
        out[name] = target
    return out


def read_study_folder(folder: str | Path) -> dict[str, bytes]:
    """The NIfTI files of one study folder (or of the single study folder inside it), as bytes.

    Raises:
        ExampleError: When the folder is missing or does not hold exactly one study.
    """
    root = Path(folder)
    try:
        studies = io.find_studies(root)
    except StudyError as exc:
        raise ExampleError(f"example folder {root}: {exc}") from exc
    if len(studies) != 1:
        raise ExampleError(
            f"example folder {root}: expected one study folder with NIfTI files, found {len(studies)}"
        )
    paths = sorted(
        p for p in studies[0].iterdir() if p.is_file() and not _hidden(p.name) and _is_nifti(p.name)
    )
    return {p.name: p.read_bytes() for p in paths}


def _cell(value: float, text: str, col: str) -> str:
    return f'<td class="num" data-col="{col}" data-value="{value!r}">{text}</td>'


def volumes_html(
    vols: Mapping[str, Any], truth_vols: Mapping[str, Any] | None = None, volume_range: Mapping[str, Any] | None = None
) -> str:
    """HTML table of the NCR, ED, ET, TC and WT volumes in mL (:func:`brats_seg.report.volumes_table`).

    Each number cell carries its full-precision value in ``data-value`` (see :func:`parse_table`).
    With ``volume_range`` (:func:`brats_seg.pipeline.volume_range`), a column gives each row's
    smallest and largest volume over those thresholds (``range_low``, ``range_high``), and a note
    under the table says what it means.
    """
    ts = list(volume_range["thresholds"]) if volume_range else []
    head = "<tr><th>label / region</th><th>meaning</th><th>prediction (mL)</th>"
    if ts:
        head += (f'<th title="the volume if each voxel needed {ts[0]:g} or only {ts[-1]:g} of the networks\' '
                 f'confidence instead of the model\'s cut">range at {ts[0]:g}\u2013{ts[-1]:g} (mL)</th>')
    head += "<th>ground truth (mL)</th></tr>" if truth_vols is not None else "</tr>"
    truth_rows = {n: ml for n, _, ml in report.volumes_table(truth_vols)} if truth_vols is not None else {}
    rows = []
    for (section, _), (name, desc, ml) in zip(report.TABLE_ROWS, report.volumes_table(vols), strict=True):
        cells = f"<td>{name}</td><td>{html.escape(desc)}</td>" + _cell(ml, f"{ml:.2f}", "prediction")
        if ts:
            low, high = min(volume_range[section][name]), max(volume_range[section][name])
            cells += (f'<td class="num"><span data-col="range_low" data-value="{low!r}">{low:.2f}</span>\u2013'
                      f'<span data-col="range_high" data-value="{high!r}">{high:.2f}</span></td>')
        if truth_vols is not None:
            cells += _cell(truth_rows[name], f"{truth_rows[name]:.2f}", "truth")
        rows.append(f'<tr data-row="{name}">{cells}</tr>')
    table = f'<table class="brats-table"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'
    if ts:
        cut = float(volume_range.get("card_threshold", 0.5))
        table += (f'<div class="brats-range-note">Range: the volume if a voxel needed a network confidence of '
                  f"{ts[0]:g}, or only {ts[-1]:g}, instead of {cut:g} to count. A wide range means that the model "
                  "hesitates over the tumour's edge; it is not a confidence interval.</div>")
    return table


def scores_html(scores: Mapping[str, Mapping[str, float]]) -> str:
    """HTML table of Dice and HD95 (mm) per region (ET, TC, WT)."""
    rows = []
    for region, s in scores.items():
        rows.append(
            f'<tr data-row="{region}"><td>{region}</td>'
            + _cell(float(s["dice"]), f"{s['dice']:.3f}", "dice")
            + _cell(float(s["hd95"]), f"{s['hd95']:.1f}", "hd95")
            + "</tr>"
        )
    head = "<tr><th>region</th><th>Dice</th><th>HD95 (mm)</th></tr>"
    return f'<table class="brats-table"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def parse_table(text: str) -> dict[str, dict[str, float]]:
    """Read back a table of :func:`volumes_html` or :func:`scores_html`: row -> column -> value."""
    out: dict[str, dict[str, float]] = {}
    for row, body in re.findall(r'<tr data-row="([^"]+)">(.*?)</tr>', text, flags=re.S):
        out[row] = {c: float(v) for c, v in re.findall(r'data-col="([^"]+)" data-value="([^"]+)"', body)}
    return out


def data_uri_link(filename: str, data: bytes, mime: str, text: str, *, css: str = "") -> str:
    """An ``<a download>`` link carrying ``data`` as a base64 ``data:`` URI (works in Voilà, no server route)."""
    payload = base64.b64encode(data).decode("ascii")
    return (
        f'<span class="brats-download"><a class="{css}" download="{html.escape(filename)}" '
        f'href="data:{mime};base64,{payload}">{html.escape(text)}</a> '
        f"<small>({_size(len(data))})</small></span>"
    )


def _size(n: int) -> str:
    """``1536`` -> ``"1.5 KiB"``; ``3 * 2**20`` -> ``"3.0 MiB"``."""
    return f"{n / 1024**2:.1f} MiB" if n >= 1024**2 else f"{n / 1024:.1f} KiB"


def parse_links(text: str) -> dict[str, bytes]:
    """Decode the ``data:`` links of an HTML fragment: download name -> bytes."""
    links = re.findall(r'download="([^"]+)" href="data:[^;"]+;base64,([^"]+)"', text)
    return {html.unescape(name): base64.b64decode(payload) for name, payload in links}


#: The figure button's text while the PNG download shows the views on the page, and once they have moved on.
FIGURE_CURRENT = "Figure (PNG) shows the current view"
FIGURE_STALE = "Update the figure (PNG) to the current view"


#: The model line's first figure: the whole tumour's mean Dice on unseen cases, from :func:`scores_line`.
_HEADLINE_SCORE = re.compile(r"^mean Dice WT (\d\.\d+)\b.* over (\d+) cases")


def model_status_html(model: Any, threads: str) -> str:
    """The model line: a short first line, and every detail in a ``<details>`` element.

    Args:
        model: The loaded model (``card``, ``networks``, ``directory``).
        threads: The CPU threads torch uses, as HTML (a warning when the setting is wrong).

    Returns:
        ``Model: <b>NAME</b> ready — for research only`` (plus the whole tumour's mean Dice on unseen
        cases when the card records it), then ``<details><summary>Details</summary>...</details>``
        with the networks, spacing, window, flips, threads, folder, post-processing and scores.
    """
    card = model.card
    measured = scores_line(card)
    cleaning = postprocess_line(card)
    headline = _HEADLINE_SCORE.match(measured or "")
    figure = f"; mean Dice WT {headline[1]} on {headline[2]} unseen cases" if headline else ""
    spacing = "x".join(f"{s:g}" for s in card.spacing)
    roi = "x".join(str(r) for r in card.roi_size)
    flips = "test-time flips, " if card.tta_flips else ""
    details = [
        f"{len(model.networks)} network(s), {spacing} mm, window {roi} voxels, {flips}{threads}",
        f"From {html.escape(str(model.directory))}",
    ]
    if cleaning:
        details.append(f'Post-processing: {html.escape(cleaning)} (tick "Keep every tumour part" to skip it).')
    if measured:
        details.append(f"Measured: {html.escape(measured)}.")
        spread = interval_line(card)
        if spread:
            details.append(f"{html.escape(spread)}: how far the mean of so few cases can move.")
    return (
        f"Model: <b>{html.escape(card.name)}</b> ready \u2014 for research only{figure}"
        f'<details class="brats-model-details"><summary>Details</summary>{"<br>".join(details)}</details>'
    )


#: Brings the review section into view. ipywidgets' HTML does not run ``<script>``; Voilà runs an
#: ``application/javascript`` output of an Output widget with its JavaScript renderer when the output
#: arrives. The element is looked up once the output is attached and laid out (``setTimeout``), as the
#: renderer runs the code before its node is in the page.
SCROLL_TO_REVIEW_JS = (
    "setTimeout(function () {"
    " var review = document.querySelector('.brats-app .brats-review');"
    " if (review) { review.scrollIntoView({behavior: 'smooth', block: 'start'}); }"
    " }, 100);"
)


def javascript_output(code: str, tag: str = "") -> dict[str, Any]:
    """An ``application/javascript`` display output for ``Output.outputs`` (no IPython needed).

    Args:
        code: The JavaScript the browser runs when the output is shown.
        tag: Words put in a leading comment; a new tag makes an otherwise equal output a change that
            the widget sends (and the browser runs) again.
    """
    text = f"/* {tag} */ {code}" if tag else code
    return {"output_type": "display_data", "data": {"application/javascript": text, "text/plain": ""}, "metadata": {}}


def _without_paths(text: str) -> str:
    """``text`` with file-system paths of two or more parts (the server's) replaced by '...'."""
    return re.sub(r"(?<![\w.])(?:[A-Za-z]:)?[/\\](?:[^\s'\"/\\]+[/\\])+[^\s'\"]*", "...", text)


def _message_html(text: str, kind: str) -> str:
    if not text:
        return ""
    return f'<div class="brats-msg brats-msg-{kind}">{html.escape(text)}</div>'


def _wait_for_page_request() -> None:
    """In a Voilà pre-heated kernel, wait until a visitor's page request takes the kernel.

    Voilà (``preheat_kernel``) runs the notebook in spare kernels before anyone asks for the page.
    Loading the model there would keep about 1 GB per spare kernel; instead the model starts
    loading when the page is opened, while the visitor picks files. Elsewhere this returns at once.
    """
    if os.environ.get("VOILA_PREHEAT") != "True":
        return
    try:
        from voila.utils import wait_for_request

        wait_for_request()
    except Exception:  # then the model simply loads now
        log.warning("could not wait for the Voila page request; loading the model now", exc_info=True)


def _setup_logging() -> None:
    """Send the app's log (details of unexpected errors) to the server's terminal."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.__stderr__)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


# --------------------------------------------------------------------------------------------------
# The dashboard
# --------------------------------------------------------------------------------------------------


@dataclass
class Result:
    """One prediction and what is shown and offered for download about it."""

    study: Study
    segmentation: Any
    volumes: dict[str, Any]
    truth_volumes: dict[str, Any] | None
    scores: dict[str, dict[str, float]] | None
    report: dict[str, Any]
    downloads: dict[str, tuple[str, bytes]]
    notes: list[str] = field(default_factory=list)


class App:
    """The dashboard: widgets wired to :mod:`brats_seg.io`, :func:`brats_seg.pipeline.segment`,
    :mod:`brats_seg.report`, :mod:`brats_seg.metrics` and :mod:`brats_seg.viz`.

    Args:
        model_dir: Model folder; default ``$BRATS_SEG_MODEL``, else the bundled ``model/``.
        example_dir: Local example study folder; default ``$BRATS_SEG_EXAMPLE_DIR``.
        example_url: Base address of the example files; default ``$BRATS_SEG_EXAMPLE_URL``, else
            :data:`EXAMPLE_URL`. Used when there is no ``example_dir``.
        cache_dir: Cache of downloaded examples (default :func:`default_cache_dir`).
        synchronous: Run predictions and example loading in the caller's thread (tests). Otherwise
            they run in a background thread so the page stays responsive and the progress bar moves.
        preload_model: Load the model in a background thread as soon as the app is built (in a
            Voilà pre-heated kernel: as soon as a visitor opens the page). Default: when not
            ``synchronous``; otherwise the model loads at the first prediction.
        own_temp_dir: Keep this kernel's temporary files in a folder of its own, removed with the
            kernel (:func:`brats_seg.server.session_temp_dir`). Default: when not ``synchronous``.

    Attributes:
        widget: The root widget to display.
        study: The loaded study, or None.
        result: The last prediction, or None.
        viewer: The :class:`~brats_seg.viz.SliceViewer` of the study, or None.
        run_count: Number of predictions started (a second click while running starts none).
        last_redraw_s: Seconds the last slider move took to redraw.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        example_dir: str | Path | None = None,
        example_url: str | None = None,
        *,
        cache_dir: str | Path | None = None,
        synchronous: bool = False,
        preload_model: bool | None = None,
        own_temp_dir: bool | None = None,
    ) -> None:
        _setup_logging()
        self.model_dir = Path(model_dir) if model_dir is not None else None
        env_dir = os.environ.get(EXAMPLE_DIR_ENV)
        self.example_dir = (
            Path(example_dir) if example_dir is not None else (Path(env_dir) if env_dir else None)
        )
        self.example_url = example_url or os.environ.get(EXAMPLE_URL_ENV) or EXAMPLE_URL
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.synchronous = synchronous

        self.files: dict[str, bytes | memoryview] = {}
        self.entries: list[Entry] = []
        self.study: Study | None = None
        self.result: Result | None = None
        self.viewer: viz.SliceViewer | None = None
        self.run_count = 0
        self.scroll_count = 0
        self.last_redraw_s = 0.0
        self.message_kind = ""
        self._model: Any = None
        self._scrolled_study: Study | None = None
        self._busy = False
        self._syncing = False
        self._state_lock = threading.Lock()
        self._render_lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._model_thread: threading.Thread | None = None
        self.turns = Turns()  # one heavy job at a time across the server's kernels
        # a kernel's temporary files in a folder of its own, gone with the kernel (tests keep the system's)
        own_temp_dir = not synchronous if own_temp_dir is None else own_temp_dir
        self.temp_dir = session_temp_dir() if own_temp_dir else None

        self._build()
        self._offer_options(self._read_card())
        preload = not synchronous if preload_model is None else preload_model
        if preload:
            self._model_thread = threading.Thread(target=self._preload_model, name="brats-model", daemon=True)
            self._model_thread.start()

    # ---------------------------------------------------------------------------------------------
    # Layout
    # ---------------------------------------------------------------------------------------------

    def _build(self) -> None:
        W = widgets
        self.model_status = W.HTML("Model: not loaded yet (it loads on the first prediction).")
        self.model_status.add_class("brats-model-status")

        self.upload = W.FileUpload(
            accept=".nii,.gz,.zip",
            multiple=True,
            description="Upload files",
            icon="",
            tooltip="The four NIfTI sequences of one study (T1, T1CE, T2, FLAIR), optionally a fifth "
            "file with the ground truth, or one .zip of the study folder (NIfTI files or DICOM series)",
        )
        self.upload.add_class("brats-upload")
        self.example_button = W.Button(description="Load example", tooltip="Load a real BraTS example study")
        self.example_button.add_class("brats-example")
        # Takes the button's place once the example proved unreachable from this server.
        self.example_note = W.HTML("", layout=W.Layout(display="none", margin="0 0 0 8px"))
        self.example_note.add_class("brats-example-note")
        self.files_box = W.VBox([])
        self.files_box.add_class("brats-files")
        self.harmonise_panel = HarmonisePanel()
        self.harmonised: Harmonised | None = None
        self.modality_dropdowns: dict[str, widgets.Dropdown] = {}

        self.predict_button = W.Button(
            description="Predict",
            button_style="primary",
            disabled=True,
            tooltip="Segment the loaded study with the model",
        )
        self.predict_button.add_class("brats-predict")
        self.keep_parts = W.Checkbox(
            value=False,
            indent=False,
            description="Keep every tumour part (skip the model card's post-processing)",
            tooltip="The card may remove small separate tumour parts (see the model line above); tick to see the network's own output",
            layout=W.Layout(width="auto", display="none"),
        )
        self.keep_parts.add_class("brats-keep-parts")
        # Shown once a card that turns test-time flips on is loaded; checked = this run skips them.
        self.quick = W.Checkbox(
            value=False,
            indent=False,
            description="Quick prediction (skip the test-time flips: about a quarter of the network time, "
            "slightly less accurate)",
            tooltip="The model card averages the scan flipped along each axis; tick for a faster first look",
            layout=W.Layout(width="auto", display="none"),
        )
        self.quick.add_class("brats-quick")
        self.progress = W.IntProgress(value=0, min=0, max=100, layout=W.Layout(width="320px"))
        self.progress.add_class("brats-progress")
        self.progress_label = W.Label("")
        self.progress_label.add_class("brats-progress-label")
        self.message = W.HTML("")
        self.message.add_class("brats-message")
        self.warnings_html = W.HTML("")
        self.warnings_html.add_class("brats-warnings")
        self.warnings: list[str] = []
        # Runs SCROLL_TO_REVIEW_JS in the browser (see _scroll_to_review); shows nothing.
        self.scroller = W.Output(layout=W.Layout(display="none"))
        self.scroller.add_class("brats-scroller")

        # Review
        self.background = W.Dropdown(
            options=[(m, m) for m in MODALITIES], value="T1CE", description="Background"
        )
        self.background.add_class("brats-background")
        self.overlay = W.Dropdown(options=[("none", "none")], value="none", description="Overlay")
        self.overlay.add_class("brats-overlay-mode")
        self.opacity = W.FloatSlider(
            value=0.4,
            min=0.0,
            max=1.0,
            step=0.05,
            description="Opacity",
            continuous_update=True,
            readout_format=".2f",
        )
        self.opacity.add_class("brats-opacity")
        self.contrast = W.FloatRangeSlider(
            value=(1.0, 99.0),
            min=0.0,
            max=100.0,
            step=0.5,
            description="Contrast %",
            continuous_update=False,
            readout_format=".1f",
            tooltip="Percentiles of the brain's intensities shown black and white",
        )
        self.contrast.add_class("brats-contrast")
        self.window_label = W.HTML("", tooltip="Intensities of the background sequence shown black and white")
        self.window_label.add_class("brats-window")
        self.crosshair = W.Checkbox(value=True, description="Crosshair", indent=False)
        self.crosshair.add_class("brats-crosshair")
        self.toggles: dict[int, widgets.Checkbox] = {}
        legend_items = []
        for value, name in LABEL_NAMES.items():
            box = W.Checkbox(
                value=True,
                description=f"{name} ({value}): {report.DESCRIPTIONS[name]}",
                indent=False,
                layout=W.Layout(width="auto"),
            )
            box.add_class(f"brats-toggle-{name.lower()}")
            self.toggles[value] = box
            swatch = W.HTML(
                f'<span class="brats-swatch" style="background:{viz.colour_hex(viz.LABEL_COLOURS[value])}"></span>'
            )
            legend_items.append(W.HBox([swatch, box], layout=W.Layout(margin="0 12px 0 0")))
        fp, fn = viz.ERROR_COLOURS["FP"], viz.ERROR_COLOURS["FN"]
        self.error_legend = W.HTML(
            f'<span class="brats-swatch" style="background:{viz.colour_hex(fp)}"></span>FP: predicted, not in the ground truth '
            f'&nbsp; <span class="brats-swatch" style="background:{viz.colour_hex(fn)}"></span>FN: in the ground truth, missed '
            "&nbsp; (errors of the region the ticked labels make: all three ticked is the whole tumour, ET alone "
            "the enhancing tumour)",
            layout=W.Layout(display="none"),
        )
        self.error_legend.add_class("brats-legend-errors")
        self.uncertain_legend = W.HTML(
            f'<span class="brats-swatch" style="background:{viz.colour_hex(viz.UNCERTAIN_COLOUR)}"></span>'
            f"where the model hesitates: the label would differ at a decision threshold of "
            f"{report.VOLUME_RANGE_THRESHOLDS[0]:g} or {report.VOLUME_RANGE_THRESHOLDS[-1]:g} "
            "(the volume table's range); the other colours are the prediction",
            layout=W.Layout(display="none"),
        )
        self.uncertain_legend.add_class("brats-legend-uncertain")

        self.images: dict[str, widgets.Image] = {}
        self.sliders: dict[str, widgets.IntSlider] = {}
        self.view_titles: dict[str, widgets.HTML] = {}
        self._click_events: dict[str, Any] = {}
        view_boxes = []
        directions = {"axial": "I \u2192 S", "coronal": "P \u2192 A", "sagittal": "L \u2192 R"}
        for view in viz.VIEWS:
            image = W.Image(format="png", layout=W.Layout(width="100%"))
            image.add_class(f"brats-view-{view}")
            slider = W.IntSlider(
                value=0,
                min=0,
                max=1,
                description=directions[view],
                continuous_update=True,
                layout=W.Layout(width="100%"),
            )
            slider.add_class(f"brats-slider-{view}")
            slider.observe(self._guard(lambda change, view=view: self._on_slider(view, change)), "value")
            self.images[view], self.sliders[view] = image, slider
            clicks = ipyevents.Event(source=image, watched_events=["click"], prevent_default_action=True)
            clicks.on_dom_event(self._guard(lambda event, view=view: self._on_click(view, event)))
            self._click_events[view] = clicks
            self.view_titles[view] = W.HTML(f"<b>{view.capitalize()}</b>")
            view_boxes.append(
                W.VBox(
                    [self.view_titles[view], image, slider],
                    layout=W.Layout(width="33%", padding="0 4px"),
                )
            )
        controls = W.HBox(
            [self.background, self.overlay, self.opacity, self.contrast, self.window_label, self.crosshair],
            layout=W.Layout(flex_flow="row wrap"),
        )
        self.review_box = W.VBox(
            [
                W.HTML("<h3>3. Review</h3>"),
                controls,
                W.HBox(legend_items, layout=W.Layout(flex_flow="row wrap")),
                self.error_legend,
                self.uncertain_legend,
                W.HBox(view_boxes),
            ],
            layout=W.Layout(display="none"),
        )
        self.review_box.add_class("brats-review")

        # Numbers and downloads
        self.volumes_table = W.HTML("")
        self.volumes_table.add_class("brats-volumes")
        self.metrics_table = W.HTML("")
        self.metrics_table.add_class("brats-metrics")
        self.numbers_box = W.VBox(
            [W.HTML("<h3>4. Numbers</h3>"), W.HBox([self.volumes_table, self.metrics_table])],
            layout=W.Layout(display="none"),
        )
        self.downloads_html = W.HTML("")
        self.downloads_html.add_class("brats-downloads")
        self.refresh_png_button = W.Button(
            description=FIGURE_CURRENT,
            tooltip="Rebuild the PNG figure with the current slices and settings",
            layout=W.Layout(width="auto"),
        )
        self.refresh_png_button.add_class("brats-refresh-png")
        self.downloads_box = W.VBox(
            [W.HTML("<h3>5. Downloads</h3>"), self.downloads_html, self.refresh_png_button],
            layout=W.Layout(display="none"),
        )

        header = W.HTML(
            _CSS + "<h2>brats-seg: brain-tumour segmentation of one MRI study</h2>"
            "<p>Upload the four sequences of one study (T1, T1CE, T2, FLAIR as NIfTI, or one .zip of the "
            "study folder with NIfTI files or DICOM series; optionally a ground-truth label map), press "
            "<b>Predict</b>, then review the "
            "tumour sub-regions over the scan. <b>Research use only; not for clinical use.</b></p>"
        )
        self.widget = W.VBox(
            [
                header,
                self.model_status,
                W.HTML("<h3>1. Study</h3>"),
                W.HBox([self.upload, self.example_button, self.example_note]),
                self.files_box,
                self.harmonise_panel.mode,
                W.HTML("<h3>2. Predict</h3>"),
                W.HBox([self.predict_button, self.progress, self.progress_label]),
                self.keep_parts,
                self.quick,
                self.message,
                self.warnings_html,
                self.harmonise_panel.box,
                self.review_box,
                self.numbers_box,
                self.downloads_box,
                self.scroller,
            ]
        )
        self.widget.add_class("brats-app")

        self.upload.observe(self._guard(self._on_upload), "value")
        self.example_button.on_click(self._guard(self._on_example_click))
        self.harmonise_panel.mode.observe(self._guard(self._on_modality_change), "value")
        self.predict_button.on_click(self._guard(self._on_predict_click))
        self.refresh_png_button.on_click(self._guard(self._on_refresh_png))
        for control in (self.keep_parts, self.quick):
            control.observe(self._guard(self._on_predict_setting), "value")
        for control in (
            self.background,
            self.overlay,
            self.opacity,
            self.contrast,
            self.crosshair,
            *self.toggles.values(),
        ):
            control.observe(self._guard(self._on_display_setting), "value")

    # ---------------------------------------------------------------------------------------------
    # Messages and errors
    # ---------------------------------------------------------------------------------------------

    @property
    def message_text(self) -> str:
        """The message shown in the page, as plain text."""
        return html.unescape(re.sub(r"<[^>]+>", "", self.message.value))

    def show_error(self, text: str) -> None:
        """Show a readable error in the page."""
        self.message_kind = "error"
        self.message.value = _message_html(text, "error")

    def show_info(self, text: str) -> None:
        """Show an information line in the page."""
        self.message_kind = "info"
        self.message.value = _message_html(text, "info")

    def show_warnings(self, warnings: list[str]) -> None:
        """Show the study's input warnings (:func:`brats_seg.quality.check_study`) under the message."""
        self.warnings = list(warnings)
        self.warnings_html.value = "".join(
            _message_html(f"Warning: {text}", "warning") for text in self.warnings
        )

    def clear_message(self) -> None:
        """Remove the message."""
        self.message_kind = ""
        self.message.value = ""

    def _report_exception(self, exc: BaseException) -> None:
        if isinstance(exc, StudyError | ModelError | ExampleError):
            self.show_error(str(exc))
            return
        log.exception("unexpected error in the dashboard")
        text = _without_paths(str(exc).splitlines()[0][:300]) if str(exc) else ""
        self.show_error(
            f"Internal error of brats-seg, not a problem found in your files ({type(exc).__name__}"
            f"{': ' + text if text else ''}). The details are in the server log; the app is still usable: try again, "
            "or load another study."
        )

    def _guard(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a widget callback so no exception escapes to the page as a traceback."""

        def wrapped(*args: Any) -> Any:
            try:
                return fn(*args)
            except Exception as exc:  # shown as a message, details logged
                self._report_exception(exc)
                return None

        return wrapped

    # ---------------------------------------------------------------------------------------------
    # Busy state and background work
    # ---------------------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Whether a prediction or an example download is running."""
        return self._busy

    def _claim(self) -> bool:
        with self._state_lock:
            if self._busy:
                return False
            self._busy = True
        self._update_controls()
        return True

    def _release(self) -> None:
        with self._state_lock:
            self._busy = False
        self._update_controls()

    def _update_controls(self) -> None:
        busy = self._busy
        self.predict_button.disabled = busy or self.study is None
        self.example_button.disabled = busy
        self.upload.disabled = busy
        for dropdown in self.modality_dropdowns.values():
            dropdown.disabled = busy
        self.refresh_png_button.disabled = busy or self.result is None

    def _start(self, job: Callable[[], None]) -> None:
        """Run a claimed job here (synchronous) or in a background thread; it releases the claim."""

        def run() -> None:
            try:
                job()
            except Exception as exc:
                self._report_exception(exc)
            finally:
                self._release()

        if self.synchronous:
            run()
        else:
            self._thread = threading.Thread(target=run, name="brats-job", daemon=True)
            self._thread.start()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the background job (prediction or example download) to finish."""
        if self._thread is not None:
            self._thread.join(timeout)

    # ---------------------------------------------------------------------------------------------
    # Model
    # ---------------------------------------------------------------------------------------------

    def _read_card(self) -> Any:
        """The model card alone (JSON, no unpickling, no torch), or None when it cannot be read yet."""
        from .card import ModelCard, default_model_dir

        try:
            return ModelCard.load((self.model_dir or default_model_dir()) / "model.json")
        except Exception:  # noqa: BLE001 - loading the model reports the problem in the status line
            return None

    def _offer_options(self, card: Any) -> None:
        """Show "Quick prediction" for a card that turns test-time flips on, and "Keep every tumour part"
        for one whose post-processing changes the labels (before the first Predict)."""
        self.quick.layout.display = "" if card is not None and card.tta_flips else "none"
        self.keep_parts.layout.display = "" if card is not None and postprocess_line(card) else "none"

    def _preload_model(self) -> None:
        self.model_status.value = "Model: loading in the background..."
        try:
            _wait_for_page_request()
            self.model()
        except Exception as exc:  # shown in the status line
            if not isinstance(exc, ModelError):
                log.exception("the model could not be loaded")

    def model(self) -> Any:
        """The model, loaded once per kernel (:func:`brats_seg.model.load_model` caches it).

        Raises:
            ModelError: When the model folder or card cannot be used (also shown in the status line).
        """
        if self._model is not None:
            return self._model
        self.model_status.value = "Model: loading..."
        try:
            from .card import default_model_dir
            from .model import load_model

            directory = self.model_dir or default_model_dir()
            model = load_model(directory)
        except ModelError as exc:
            self.model_status.value = (
                f'<span style="color:#a00">Model not available: {html.escape(str(exc))}</span>'
            )
            raise
        except Exception as exc:
            self.model_status.value = (
                f'<span style="color:#a00">Model not available ({html.escape(type(exc).__name__)}: '
                f"{html.escape(str(exc)[:200])})</span>"
            )
            raise ModelError(
                f"the model in {directory} could not be loaded ({type(exc).__name__}: {exc})"
            ) from exc
        from .inference import configure_threads

        try:
            threads = f"{configure_threads()} CPU thread(s)"
        except ValueError as exc:  # a server setting, not the user's fault: say so and go on
            log.warning("%s", exc)
            threads = f'<span style="color:#a00">{html.escape(str(exc))}; using the default threads</span>'
        self._offer_options(model.card)
        # one assignment: the preloading thread and a Predict click may both get here
        self.model_status.value = model_status_html(model, threads)
        self._model = model
        return model

    # ---------------------------------------------------------------------------------------------
    # Files
    # ---------------------------------------------------------------------------------------------

    def _on_upload(self, change: Mapping[str, Any]) -> None:
        files = upload_files(change["new"])
        if not files:
            return
        if self._busy:
            self.show_error("Busy: wait for the current run to finish, then upload again.")
            return
        self.set_files(files)

    def set_files(self, files: Mapping[str, bytes | memoryview], *, origin: str = "upload") -> Study | None:
        """Show the given files with their detected sequences and load the study if it is complete.

        Args:
            files: File name -> content (four or five NIfTI files, or one .zip of NIfTI files or DICOM series).
            origin: Where they come from, for the information line.

        Returns:
            The loaded study, or None (the reason is shown in the message area).
        """
        self._reset_results()
        self.files = dict(files)
        self.entries = list_entries(self.files)
        self._build_file_rows()
        return self._load_study(origin=origin)

    def _build_file_rows(self) -> None:
        rows = []
        self.modality_dropdowns = {}
        for entry in self.entries:
            where = f" (in {entry.source})" if entry.source != entry.name else ""
            size = f", {_size(entry.size)}" if entry.size else ""
            label = widgets.HTML(
                f"<code>{html.escape(entry.label or entry.name)}</code>{html.escape(where + size)}",
                layout=widgets.Layout(width="420px"),
            )
            if entry.nifti:
                if entry.label:  # a DICOM series: one left unrecognised (a localizer, DWI) is ignored
                    detected = entry.detected or "IGNORE"
                    note = "detected: " + entry.detected if entry.detected else "not recognised from its description: ignored"
                else:
                    detected = entry.detected or ""
                    note = f"detected: {detected}" if detected else "not recognised from the name: choose"
                dropdown = widgets.Dropdown(
                    options=list(MODALITY_CHOICES), value=detected, layout=widgets.Layout(width="200px")
                )
                dropdown.add_class("brats-modality")
                dropdown.observe(self._guard(self._on_modality_change), "value")
                self.modality_dropdowns[entry.name] = dropdown
                row = widgets.HBox([label, dropdown, widgets.Label(note)])
            else:
                reason = (
                    "not a NIfTI file" if not entry.name.lower().endswith(".zip") else "not a readable zip"
                )
                row = widgets.HBox([label, widgets.Label(reason)])
            row.add_class("brats-file-row")
            rows.append(row)
        self.files_box.children = rows

    def mapping(self) -> dict[str, str]:
        """File name -> sequence as chosen in the dropdowns (the explicit mapping given to io)."""
        return {name: dropdown.value for name, dropdown in self.modality_dropdowns.items() if dropdown.value}

    def _on_modality_change(self, change: Mapping[str, Any]) -> None:
        if self._syncing or self._busy:
            return
        self._reset_results()
        self._load_study(origin="upload")

    def _load_study(self, *, origin: str) -> Study | None:
        self.study = None
        self.show_warnings([])
        self.viewer = None
        self.review_box.layout.display = "none"
        self._update_controls()
        unchosen = [name for name, dropdown in self.modality_dropdowns.items() if not dropdown.value]
        if unchosen:
            self.show_error(
                f"{', '.join(unchosen)}: cannot tell which sequence the file holds from its name; choose it "
                "in the list next to the file (T1, T1CE, T2, FLAIR, ground truth or ignore)."
            )
            return None
        self.harmonised = None
        self.harmonise_panel.show(None)
        if not self.files:
            return None
        try:
            study = self._load_and_harmonise()
        except StudyError as e:
            studies = quality.file_studies({name: name for name in self.files})
            if len(studies) > 1:
                raise StudyError(
                    f"{e}. The files name {len(studies)} studies ({', '.join(studies)}): upload one study at a time, "
                    "or choose \"ignore\" in the list next to each file of the others."
                ) from e
            if len(self.files) < 4 and not any(name.lower().endswith(".zip") for name in self.files):
                raise StudyError(
                    f"{e}. Each upload replaces the files before it: select the four sequences (and the ground "
                    "truth, if any) together in one upload, or upload one .zip of them."
                ) from e
            raise
        self.study = study
        self._show_study(study)
        found = ", ".join(f"{m} {study.sources[m]}" for m in MODALITIES)
        truth = f"; ground truth {study.sources[io.SEG]}" if study.truth is not None else ""
        raw = ""
        if self.harmonised is not None:
            raw = (f" Raw study: preprocessed in {self.harmonised.timings['total']:.1f} s onto {study.grid_text} (see "
                   "\"Preprocessing of a raw study\" below: check the registration).")
            study_grid = f"as uploaded {self.harmonised.native.shape[0]} x {self.harmonised.native.shape[1]} x " \
                         f"{self.harmonised.native.shape[2]} ({self.harmonised.reference})"
        else:
            study_grid = study.grid_text
        self.show_info(f"Loaded {study.name} ({origin}): {study_grid}; {found}{truth}.{raw} Press Predict.")
        self.show_warnings(quality.check_study(study))
        self._update_controls()
        return study

    def _load_and_harmonise(self) -> Study:
        """The uploaded study as the model reads it: harmonised when it is raw (and the choice allows)."""
        from .harmonise import decide, harmonise
        from .harmonise_outputs import registration_png

        mode = self.harmonise_panel.mode.value
        if mode == "off":
            return io.load_study_from_bytes(self.files, mapping=self.mapping() or None)
        raw = io.load_native_study_from_bytes(self.files, mapping=self.mapping() or None)

        def say(text: str) -> None:
            self.progress_label.value = f"Preprocessing {raw.name}: {text}"

        reasons = decide(raw, mode=mode)
        if not reasons:
            return raw.to_study()
        with self.turns.turn(self._show_wait):  # a heavy job: after the other sessions' jobs
            self.harmonised = harmonise(raw, reasons=reasons, progress=say)
        self.harmonise_panel.show(self.harmonised, registration_png(self.harmonised))
        t = self.harmonised.timings
        self.progress_label.value = f"Preprocessed in {t['total']:.1f} s: " + ", ".join(
            f"{k.replace('_', ' ')} {v:.1f} s" for k, v in t.items() if k != "total")
        return self.harmonised.study

    # ---------------------------------------------------------------------------------------------
    # Example
    # ---------------------------------------------------------------------------------------------

    def _on_example_click(self, _button: Any) -> None:
        if not self._claim():
            return
        self._start(self._example_job)

    def load_example(self) -> Study | None:
        """Load the example study now (in this thread); returns it, or None after showing why not."""
        if not self._claim():
            return None
        try:
            return self._example_job()
        except Exception as exc:
            self._report_exception(exc)
            return None
        finally:
            self._release()

    def _example_job(self) -> Study | None:
        if self.example_dir is not None:
            self.show_info(f"Loading the example study from {self.example_dir} ...")
            files = read_study_folder(self.example_dir)
            origin = f"example from {self.example_dir}"
        else:
            self.show_info(f"Downloading the example study {EXAMPLE_CASE} from {self.example_url} ...")
            try:
                paths = fetch_example(self.example_url, cache_dir=self.cache_dir)
            except ExampleUnreachable as exc:
                self._example_unreachable(exc)
                return None
            files = {name: path.read_bytes() for name, path in paths.items()}
            origin = f"example {EXAMPLE_CASE}"
        return self.set_files(files, origin=origin)

    def _example_unreachable(self, exc: ExampleUnreachable) -> None:
        """Hide "Load example" (another click would fail the same way) and say what to do instead.

        Only for a server that cannot be reached; a file that arrives damaged (sha256 mismatch)
        leaves the button, since the next try may succeed.
        """
        log.warning("example download failed: %s", exc)
        self.example_button.layout.display = "none"
        self.example_note.value = (
            f"<small>Example not available from this server: upload the files, or set "
            f"<code>{EXAMPLE_DIR_ENV}</code>.</small>"
        )
        self.example_note.layout.display = ""
        self.show_error(
            f"The example study cannot be downloaded from this server ({exc.url}: {exc.reason}). "
            f'Upload the four sequences of a study with "Upload files" instead, or set {EXAMPLE_DIR_ENV} '
            "to a folder holding a local copy of the example study and restart the dashboard."
        )

    # ---------------------------------------------------------------------------------------------
    # Prediction
    # ---------------------------------------------------------------------------------------------

    def _on_predict_click(self, _button: Any) -> None:
        if self.study is None or not self._claim():
            return
        self._start(self._predict_job)

    def _on_predict_setting(self, _change: Mapping[str, Any]) -> None:
        """A prediction setting changed: the shown result was made without it until Predict runs again."""
        if self.result is not None and not self._busy:
            self.progress_label.value = "Settings changed: press Predict to apply them to the labels shown."

    def predict(self) -> Result | None:
        """Run the prediction now, in this thread; returns the result, or None (reason shown)."""
        if self.study is None or not self._claim():
            return None
        try:
            return self._predict_job()
        except Exception as exc:
            self._report_exception(exc)
            return None
        finally:
            self._release()

    def _predict_job(self) -> Result | None:
        study = self.study
        if study is None:
            return None
        self.run_count += 1
        start = time.perf_counter()
        self.progress.value = 0
        self.progress.bar_style = ""
        self.progress_label.value = "Loading the model..." if self._model is None else "Preparing..."
        try:
            model = self.model()
            from .pipeline import segment

            self.progress_label.value = "Preparing..."
            with self.turns.turn(self._show_wait) as waited:
                seg = segment(study, model, postprocessing=not self.keep_parts.value,
                              tta_flips=False if self.quick.value else None,
                              progress=self._progress_callback(time.perf_counter()), harmonised=self.harmonised)
            self.progress_label.value = f"Computing volumes and scores... {time.perf_counter() - start:.1f} s"
            result = self._make_result(study, seg, model)
        except BaseException:
            self.progress.bar_style = "danger"
            self.progress_label.value = f"Failed after {time.perf_counter() - start:.1f} s"
            raise
        self.result = result
        self._show_result(result)
        self.show_warnings(seg.warnings)
        t = seg.timings
        self.progress.value = 100
        self.progress.bar_style = "success"
        quick = " Quick prediction: no test-time flips." if self.quick.value and model.card.tta_flips else ""
        queued = f"waited {waited:.1f} s for other sessions, " if waited >= 0.5 else ""
        self.progress_label.value = (
            f"Done in {time.perf_counter() - start:.1f} s ({queued}prepare {t.get('prepare', 0):.1f} s, "
            f"network {t.get('predict', 0):.1f} s, labels {t.get('postprocess', 0):.1f} s).{quick}"
        )
        wt = result.volumes["regions"]["WT"]["mL"]
        self.show_info(
            f"{study.name}: whole tumour {wt:.1f} mL. Review the labels below; downloads at the bottom."
            + "".join(f" {note}" for note in result.notes)
        )
        self._scroll_to_review(study)
        return result

    def _show_wait(self, place: int, waited: float) -> None:
        """Say that this session waits for others' jobs on a shared server (see :mod:`brats_seg.turns`)."""
        jobs = "job" if place == 1 else "jobs"
        self.progress_label.value = (f"Waiting for {place} other {jobs} on this server to finish (place {place} in the "
                                     f"queue, {waited:.0f} s so far)...")

    def _scroll_to_review(self, study: Study) -> None:
        """Bring the review section into view after the first successful prediction of ``study``.

        Later predictions of the same study, and slider moves, leave the page where the user put it.
        Without a browser this only sets the Output widget's ``outputs``: nothing runs, nothing raises.
        """
        if self._scrolled_study is study:
            return
        self._scrolled_study = study
        self.scroll_count += 1
        self.scroller.outputs = (javascript_output(SCROLL_TO_REVIEW_JS, f"brats-seg scroll {self.scroll_count}"),)

    def _progress_callback(self, start: float) -> Callable[[float], None]:
        last = {"pct": -1, "t": 0.0}

        def update(fraction: float) -> None:
            pct = int(max(0.0, min(1.0, float(fraction))) * 100)
            now = time.perf_counter()
            if pct != last["pct"] and (now - last["t"] >= 0.1 or pct >= 100):
                last["pct"], last["t"] = pct, now
                self.progress.value = pct
                self.progress_label.value = f"Predicting: {pct}% - {now - start:.1f} s"

        return update

    def _make_result(self, study: Study, seg: Any, model: Any) -> Result:

        vols = report.volumes(seg.labels)
        truth_vols = scores = None
        if study.truth is not None:
            from .metrics import score

            truth_vols = report.volumes(study.truth_map)
            scores = score(seg.labels, study.truth_map)
        rep = report.study_report(study, seg, model, vols, scores)
        labels = seg.native or seg.labels  # a raw study's labels go back onto its native T1CE grid
        with tempfile.TemporaryDirectory(prefix="brats_seg_app_") as tmp:
            nifti = io.save_labels(labels, Path(tmp) / f"{study.name}_seg.nii.gz").read_bytes()
        downloads = {
            f"{study.name}_seg.nii.gz": ("application/gzip", nifti),
            f"{study.name}_report.json": ("application/json", (json.dumps(rep, indent=2) + "\n").encode()),
        }
        if seg.uncertain is not None:  # as `brats-seg predict --hesitation-map` writes it
            with tempfile.TemporaryDirectory(prefix="brats_seg_app_") as tmp:
                uncertain = seg.uncertain if seg.native is None else seg.native_uncertain
                path = io.save_hesitation(uncertain, labels, Path(tmp) / f"{study.name}_hesitation.nii.gz")
                downloads[path.name] = ("application/gzip", path.read_bytes())
        notes = []
        if study.dicom:
            from . import __version__
            from .dicom import write_segmentation

            try:
                with tempfile.TemporaryDirectory(prefix="brats_seg_app_") as tmp:
                    dcm = write_segmentation(labels, study, Path(tmp) / f"{study.name}_seg.dcm",
                                             model_name=model.card.name, software_version=f"brats-seg {__version__}")
                    downloads[f"{study.name}_seg.dcm"] = ("application/dicom", dcm.read_bytes())
            except StudyError as e:
                notes.append(f"No DICOM SEG download: {e}")
        if self.harmonised is not None and seg.native is not None:
            from .harmonise_outputs import harmonised_files

            extra = harmonised_files(self.harmonised, seg.labels, seg.native)
            downloads.update(extra)
            self.harmonise_panel.show_native(extra[f"{study.name}_native.png"][1], reference=self.harmonised.reference)
        return Result(study, seg, vols, truth_vols, scores, rep, downloads, notes)

    def _show_result(self, result: Result) -> None:
        viewer = self.viewer
        if viewer is not None:
            with self._render_lock:
                viewer.set_labels("prediction", result.segmentation.labels.array)
                viewer.set_labels("uncertain", result.segmentation.uncertain)
                viewer.centre_on(viewer.focus())
            self._set_overlay_options(
                ["prediction", *(["uncertain"] if result.segmentation.uncertain is not None else []),
                 *(["truth", "errors"] if result.study.truth is not None else []), "none"],
                "prediction",
            )
            self._sync_sliders()
            self._render(viz.VIEWS)
        self.volumes_table.value = volumes_html(result.volumes, result.truth_volumes, result.segmentation.volume_range)
        self.metrics_table.value = scores_html(result.scores) if result.scores is not None else ""
        self.numbers_box.layout.display = "flex"
        self._build_png(result)

    def _build_png(self, result: Result) -> None:
        viewer = self.viewer
        kwargs: dict[str, Any] = {}
        if viewer is not None:
            s = viewer.settings
            kwargs = {
                "background": s.background,
                "position": list(viewer.position),
                "mode": s.mode,
                "opacity": s.opacity,
                "percentiles": s.percentiles,
                "visible_labels": sorted(s.visible),
            }
        png = viz.export_png(
            result.study, result.segmentation.labels, result.volumes, scores=result.scores,
            uncertain=result.segmentation.uncertain, **kwargs
        )
        result.downloads[f"{result.study.name}_views.png"] = ("image/png", png)
        texts = {  # the first suffix that matches names the link
            "_hesitation.nii.gz": ("Where it hesitates (NIfTI)", "brats-download-hesitation"),
            ".nii.gz": ("Label map (NIfTI)", "brats-download-nifti"),
            ".json": ("Report (JSON)", "brats-download-json"),
            ".png": ("Figure (PNG)", "brats-download-png"),
            ".dcm": ("Segmentation (DICOM SEG)", "brats-download-dicom-seg"),
        }
        links = []
        for name, (mime, data) in result.downloads.items():
            text, css = next(v for k, v in texts.items() if name.endswith(k))
            links.append(data_uri_link(name, data, mime, text, css=css))
        self.downloads_html.value = " ".join(links)
        self.downloads_box.layout.display = "flex"
        self._mark_figure(current=True)
        self._update_controls()

    def _on_refresh_png(self, _button: Any) -> None:
        if self.result is not None and not self._busy:
            self._build_png(self.result)

    def downloads(self) -> dict[str, bytes]:
        """File name -> bytes of the download links shown in the page."""
        return parse_links(self.downloads_html.value)

    def volumes_shown(self) -> dict[str, dict[str, float]]:
        """The volumes table as displayed: name (NCR, ED, ET, TC, WT) -> column -> mL."""
        return parse_table(self.volumes_table.value)

    def scores_shown(self) -> dict[str, dict[str, float]]:
        """The Dice / HD95 table as displayed: region -> ``{"dice", "hd95"}`` (empty without truth)."""
        return parse_table(self.metrics_table.value)

    def _reset_results(self) -> None:
        self.result = None
        self.volumes_table.value = ""
        self.metrics_table.value = ""
        self.downloads_html.value = ""
        self.numbers_box.layout.display = "none"
        self.downloads_box.layout.display = "none"
        self.progress.value = 0
        self.progress.bar_style = ""
        self.progress_label.value = ""
        if self.viewer is not None:
            with self._render_lock:
                self.viewer.set_labels("prediction", None)
                self.viewer.set_labels("uncertain", None)
        self._update_controls()

    # ---------------------------------------------------------------------------------------------
    # Review
    # ---------------------------------------------------------------------------------------------

    def _show_study(self, study: Study) -> None:
        with self._render_lock:
            viewer = viz.SliceViewer.from_study(study, background=self.background.value)
            viewer.update(
                opacity=float(self.opacity.value),
                percentiles=tuple(self.contrast.value),
                visible=self._visible(),
                crosshair=bool(self.crosshair.value),
            )
            viewer.centre_on(viewer.focus())
            self.viewer = viewer
            self._show_window()
        modes = ["truth", "none"] if study.truth is not None else ["none"]
        self._set_overlay_options(modes, modes[0])
        self._sync_sliders()
        self._render(viz.VIEWS)
        self.review_box.layout.display = "flex"

    def _visible(self) -> list[int]:
        return [value for value, box in self.toggles.items() if box.value]

    def _show_legend(self, mode: str) -> None:
        """The error and hesitation legends show with their overlay modes only."""
        self.error_legend.layout.display = "block" if mode == "errors" else "none"
        self.uncertain_legend.layout.display = "block" if mode == "uncertain" else "none"

    def _set_overlay_options(self, modes: list[str], value: str) -> None:
        self._syncing = True
        try:
            self.overlay.options = [(OVERLAY_CHOICES[m], m) for m in modes]
            self.overlay.value = value
        finally:
            self._syncing = False
        if self.viewer is not None:
            with self._render_lock:
                self.viewer.update(mode=value)
        self._show_legend(value)

    def _sync_sliders(self) -> None:
        viewer = self.viewer
        if viewer is None:
            return
        self._syncing = True
        try:
            for view, slider in self.sliders.items():
                axis = viz.VIEW_AXIS[view]
                slider.max = max(viewer.shape[axis] - 1, 1)
                slider.value = int(viewer.position[axis])
                self.view_titles[view].value = (  # what the slider's bare number counts
                    f"<b>{view.capitalize()}</b> <small>slices 0-{viewer.shape[axis] - 1}, "
                    f"{viewer.spacing[axis]:g} mm apart</small>"
                )
        finally:
            self._syncing = False

    def _render(self, views: list[str] | tuple[str, ...]) -> None:
        viewer = self.viewer
        if viewer is None:
            return
        with self._render_lock:
            for view in views:
                self.images[view].value = viewer.png(view)
        if views and self.result is not None:
            self._mark_figure(current=False)

    def _mark_figure(self, *, current: bool) -> None:
        """Say on the figure button whether the PNG download still shows the views on the page."""
        description, style = (FIGURE_CURRENT, "") if current else (FIGURE_STALE, "warning")
        if self.refresh_png_button.description != description:
            self.refresh_png_button.description = description
            self.refresh_png_button.button_style = style

    def _on_slider(self, view: str, change: Mapping[str, Any]) -> None:
        if self._syncing or self.viewer is None:
            return
        start = time.perf_counter()
        with self._render_lock:
            changed = self.viewer.move(view, int(change["new"]))
            self._render(changed)
        self.last_redraw_s = time.perf_counter() - start

    def _on_click(self, view: str, event: Mapping[str, Any]) -> None:
        if "dataX" not in event or "dataY" not in event:
            return
        self.click(view, float(event["dataX"]), float(event["dataY"]))

    def click(self, view: str, x: float, y: float) -> list[str]:
        """Move the crosshair to the voxel under pixel ``(x, y)`` of a view, as a click does.

        The other two views jump to the clicked voxel's slices and the sliders follow.

        Returns:
            The views that were redrawn.
        """
        if self.viewer is None:
            return []
        with self._render_lock:
            changed = self.viewer.click(view, x, y)
            self._sync_sliders()
            self._render(changed)
        return changed

    def _on_display_setting(self, change: Mapping[str, Any]) -> None:
        if self._syncing or self.viewer is None:
            return
        mode = self.overlay.value
        self._show_legend(mode)
        with self._render_lock:
            changed = self.viewer.update(
                background=self.background.value,
                mode=mode,
                opacity=float(self.opacity.value),
                percentiles=tuple(self.contrast.value),
                visible=self._visible(),
                crosshair=bool(self.crosshair.value),
            )
            self._show_window()
            if changed:
                self._render(viz.VIEWS)

    def _show_window(self) -> None:
        """Show the intensity window that the contrast percentiles give, in the file's units."""
        if self.viewer is None:
            return
        low, high = self.viewer.window_limits()
        self.window_label.value = f"window <b>{low:.4g}</b> – <b>{high:.4g}</b>"

    def move(self, view: str, index: int) -> float:
        """Move a view's slider as a user would; returns the seconds the redraw took."""
        self.sliders[view].value = int(index)
        return self.last_redraw_s
