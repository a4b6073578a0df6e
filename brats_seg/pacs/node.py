"""The PACS node's work: one study from query to stored results, and a watch loop over new studies."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PacsError, PacsUnreachableError, StudyError
from .net import PacsConfig, find_mr_series, find_series, find_studies, get_series, store_files

if TYPE_CHECKING:
    from ..model import Model

__all__ = [
    "describe",
    "load_state",
    "result_descriptions",
    "results_on_pacs",
    "run_study",
    "save_state",
    "watch",
    "watch_pass",
]

Log = Callable[[str], None]


def run_study(
    config: PacsConfig,
    study_uid: str,
    *,
    model: Model,
    output_dir: str | Path,
    mapping: Mapping[str, str] | None = None,
    harmonise: str = "auto",
) -> dict[str, Any]:
    """Fetch a study's MR series, segment it, write its files and store its DICOM SEG and SR back.

    The files go to ``output_dir/<study_uid>/`` named ``<study_uid>_...`` (never after the patient):
    those of :meth:`brats_seg.result.Segmentation.write` with the DICOM SEG, and ``<study_uid>_sr.dcm``,
    a Comprehensive 3D SR of the volumes (:func:`brats_seg.files.write_volume_report`). Nothing is
    stored twice: a SEG or SR that the PACS already holds for the study and model (found by its
    SeriesDescription, :func:`result_descriptions`) is not stored again, and when it holds both,
    the study is neither fetched nor segmented (a crash between storing and recording costs nothing).

    Args:
        config: The PACS.
        study_uid: The StudyInstanceUID.
        model: From :func:`brats_seg.model.load_model`.
        output_dir: Where the study's folder is made.
        mapping: Which series is which sequence (see :func:`brats_seg.files.load_study`).
        harmonise: ``"auto"``, ``"on"`` or ``"off"`` (see :func:`brats_seg.harmonise.decide`).

    Returns:
        ``{"study_uid", "folder", "files", "stored", "WT_mL", "seconds"}``; with ``"already_stored":
        ["SEG", "SR"]`` (and no files, WT_mL None) when the PACS held both results.

    Raises:
        PacsError: When the PACS cannot be reached, has no such study, or refuses the results.
        StudyError: When the study's series cannot be read as the four sequences (naming the PACS).
    """
    started = time.perf_counter()
    series = find_mr_series(config, study_uid)
    folder = Path(output_dir) / study_uid
    summary: dict[str, Any] = {"study_uid": study_uid, "folder": str(folder), "files": [], "stored": []}
    on_pacs = results_on_pacs(config, study_uid, model.card.name)
    if on_pacs == {"SEG", "SR"}:
        return {**summary, "already_stored": ["SEG", "SR"], "WT_mL": None, "seconds": 0.0}
    opts = {"mapping": mapping, "harmonise": harmonise, "started": started}
    files, results, wt = _segment_and_write(config, study_uid, series, model=model, folder=folder, **opts)
    to_store = [path for modality, path in results.items() if modality not in on_pacs]
    if to_store:
        store_files(config, to_store)
    return {
        **summary,
        "files": [str(p) for p in files],
        "stored": [p.name for p in to_store],
        "WT_mL": round(wt, 2),
        "seconds": round(time.perf_counter() - started, 2),
    }


def result_descriptions(model_name: str) -> dict[str, str]:
    """The SeriesDescription of the SEG and of the SR this node writes with a model, by modality."""
    return {"SEG": f"brats-seg {model_name}"[:64], "SR": f"brats-seg {model_name} volumes"[:64]}


def results_on_pacs(config: PacsConfig, study_uid: str, model_name: str) -> set[str]:
    """Which of this node's results (``"SEG"``, ``"SR"``) the PACS holds for the study and model.

    Raises:
        PacsError: When the series query fails.
    """
    wanted = result_descriptions(model_name)
    return {
        s["Modality"]
        for s in find_series(config, study_uid)
        if wanted.get(s["Modality"]) == s["SeriesDescription"].strip()
    }


def _segment_and_write(
    config: PacsConfig,
    study_uid: str,
    series: list[dict[str, str]],
    *,
    model: Model,
    folder: Path,
    mapping: Mapping[str, str] | None,
    harmonise: str,
    started: float,
) -> tuple[list[Path], dict[str, Path], float]:
    """Fetch, load, segment; write the study's files and its SR.

    Returns:
        Every file written, ``{"SEG": path, "SR": path}``, and the whole tumour's volume in mL.
    """
    from pydicom import dcmread

    from .. import __version__, pipeline
    from ..files import write_volume_report
    from ..report import volumes

    with tempfile.TemporaryDirectory(prefix="brats_seg_pacs_") as tmp:
        get_series(config, study_uid, series, Path(tmp))
        study, harmonised = _load(config, study_uid, Path(tmp), mapping=mapping, harmonise=harmonise)
        seg = pipeline.segment(study, model, harmonised=harmonised)
        paths = seg.write(folder, study, model, dicom_seg=True, started=started)
    seg_path = folder / f"{study.name}_seg.dcm"
    vols = volumes(seg.labels)
    sr = write_volume_report(
        dcmread(seg_path), vols, model_name=model.card.name, software_version=f"brats-seg {__version__}"
    )
    sr_path = folder / f"{study.name}_sr.dcm"
    sr.save_as(sr_path, enforce_file_format=True)
    return [*paths, sr_path], {"SEG": seg_path, "SR": sr_path}, float(vols["regions"]["WT"]["mL"])


def _load(
    config: PacsConfig, study_uid: str, folder: Path, *, mapping: Mapping[str, str] | None, harmonise: str
) -> tuple[Any, Any]:
    """:func:`brats_seg.harmonise.load_for_model` of the fetched series, its errors naming the PACS."""
    from ..harmonise import load_for_model

    try:
        return load_for_model(
            folder, mapping=dict(mapping or {}), name=study_uid, mode=harmonise, need_dicom=True
        )
    except StudyError as e:
        raise StudyError(f"{config.name}: study {study_uid}: {e}") from None
    except (NotImplementedError, RuntimeError, AttributeError) as e:  # pydicom without a pixel-data plug-in
        raise StudyError(
            f"{config.name}: study {study_uid}: expected MR images whose pixel data can be decoded, found "
            f"{type(e).__name__}: {str(e)[:200]}"
        ) from None


def describe(config: PacsConfig, summary: Mapping[str, Any]) -> str:
    """What :func:`run_study` did, in words: processed and stored, or found already on the PACS."""
    if summary.get("already_stored"):
        return (
            f"already on {config.name} (this model's SEG and SR), recorded as done; nothing fetched, "
            "segmented or stored"
        )
    return (
        f"processed in {summary['seconds']:.1f} s, WT {summary['WT_mL']:.1f} mL; stored to "
        f"{config.name}: {', '.join(summary['stored'])}"
    )


def load_state(path: str | Path) -> dict[str, dict[str, Any]]:
    """The watch's state: ``{"done": {uid: summary}, "failed": {uid: reason}}`` (empty when absent)."""
    path = Path(path)
    if not path.exists():
        return {"done": {}, "failed": {}}
    try:
        state = json.loads(path.read_text())
        return {"done": dict(state["done"]), "failed": dict(state["failed"])}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StudyError(
            f"{path}: expected a watch state {{'done': ..., 'failed': ...}}, found: {e}"
        ) from None


def save_state(path: str | Path, state: Mapping[str, Any]) -> None:
    """Write the state atomically: a temporary file beside it, then renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def watch_pass(
    config: PacsConfig,
    *,
    get_model: Callable[[], Model],
    output_dir: str | Path,
    state_path: str | Path,
    log: Log = print,
    since: str = "",
    max_studies: int | None = None,
    **options: Any,
) -> tuple[int, int]:
    """Query the PACS for MR studies and process each one not yet in the state, once, oldest first.

    Args:
        config: The PACS.
        get_model: Returns the model (called only when there is a study to process).
        output_dir: As for :func:`run_study`.
        state_path: The state file (:func:`load_state`), written after each study.
        log: Called with one line per study: processed, or failed with the reason.
        since: ``YYYYMMDD``: only studies of that StudyDate or later; ``""``: no limit.
        max_studies: At most this many studies in the pass (a large archive in slices); None: no limit.
        **options: For :func:`run_study` (``mapping``, ``harmonise``).

    Returns:
        ``(processed, failed)`` in this pass.

    Raises:
        PacsError: When the study query fails; PacsUnreachableError also when the PACS goes away during
            a study (which stays out of the state, to be run in a later pass).
    """
    state = load_state(state_path)
    todo = [s["StudyInstanceUID"] for s in find_studies(config, since=since)]
    todo = [uid for uid in todo if uid and uid not in state["done"] and uid not in state["failed"]]
    todo = todo[:max_studies]
    processed = failed = 0
    for uid in todo:
        try:
            summary = run_study(config, uid, model=get_model(), output_dir=output_dir, **options)
        except PacsUnreachableError:
            raise  # not the study's fault: left for the next pass, after the back-off
        except (StudyError, PacsError) as e:
            reason = " ".join(str(e).split())
            state["failed"][uid] = reason
            failed += 1
            log(f"{uid}: failed: {reason}")
        else:
            state["done"][uid] = summary
            processed += 1
            log(f"{uid}: {describe(config, summary)}")
        save_state(state_path, state)
    return processed, failed


def watch(
    config: PacsConfig,
    *,
    interval: float = 60.0,
    once: bool = False,
    max_backoff: float = 900.0,
    log: Log = print,
    sleep: Callable[[float], None] = time.sleep,
    **pass_options: Any,
) -> int:
    """Run :func:`watch_pass` every ``interval`` seconds; a PACS that cannot be reached is retried with
    back-off (doubling up to ``max_backoff``) and never stops the loop.

    Args:
        config: The PACS.
        interval: Seconds between passes.
        once: One pass, then return.
        max_backoff: The longest wait after failed queries.
        log: Called with each line.
        sleep: Waits (a test's stand-in).
        **pass_options: For :func:`watch_pass`.

    Returns:
        The number of studies that failed (with ``once``, also 1 when the PACS could not be queried).
    """
    failures = 0
    wait = interval
    while True:
        try:
            done, failed = watch_pass(config, log=log, **pass_options)
            failures += failed
            log(f"{config.name}: pass done, {done} processed, {failed} failed")
            wait = interval
        except PacsError as e:
            then = "not retried (one pass)" if once else f"retrying in {wait:g} s"
            log(f"{config.name}: query failed: {' '.join(str(e).split())}; {then}")
            if once:
                return failures + 1
            sleep(wait)
            wait = min(wait * 2, max_backoff)
            continue
        if once:
            return failures
        sleep(wait)
