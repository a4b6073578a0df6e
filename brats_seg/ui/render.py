"""HTML of the dashboard's text parts, rendered from Python values (nothing is read back from HTML).

The tables: :func:`volume_rows` gives the numbers the volumes table shows (the dashboard keeps
them), :func:`volumes_html` renders them; likewise :func:`scores_html`. Each number cell carries
its full-precision value in ``data-col``/``data-value`` for browser tests.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any

from .. import report
from ..card import interval_line, postprocess_line, scores_line

__all__ = [
    "CSS",
    "SCROLL_TO_REVIEW_JS",
    "javascript_output",
    "message_html",
    "model_status_html",
    "scores_html",
    "size_text",
    "volume_rows",
    "volumes_html",
    "without_paths",
]

CSS = """
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


def _cell(value: float, text: str, col: str) -> str:
    return f'<td class="num" data-col="{col}" data-value="{value!r}">{text}</td>'


def volume_rows(
    vols: Mapping[str, Any],
    truth_vols: Mapping[str, Any] | None = None,
    volume_range: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, float]]:
    """The numbers of the volumes table: row (NCR, ED, ET, TC, WT) -> column -> mL.

    Columns: ``prediction``; with ``volume_range`` (:func:`brats_seg.pipeline.volume_range`)
    ``range_low`` and ``range_high`` (the row's smallest and largest volume over its thresholds);
    with ``truth_vols`` ``truth``.
    """
    truth = {n: ml for n, _, ml in report.volumes_table(truth_vols)} if truth_vols is not None else {}
    rows: dict[str, dict[str, float]] = {}
    for (section, _), (name, _, ml) in zip(report.TABLE_ROWS, report.volumes_table(vols), strict=True):
        row = {"prediction": ml}
        if volume_range:
            values = volume_range[section][name]
            row.update(range_low=min(values), range_high=max(values))
        if truth_vols is not None:
            row["truth"] = truth[name]
        rows[name] = row
    return rows


def volumes_html(
    vols: Mapping[str, Any],
    truth_vols: Mapping[str, Any] | None = None,
    volume_range: Mapping[str, Any] | None = None,
    *,
    corrected: int | None = None,
) -> str:
    """HTML table of the NCR, ED, ET, TC and WT volumes in mL (:func:`volume_rows`), with a note under
    it on what the range column (with ``volume_range``) means; ``corrected``: the voxels a person changed
    (the column then says "corrected (N voxels changed)")."""
    ts = list(volume_range["thresholds"]) if volume_range else []
    column = "prediction (mL)"
    if corrected is not None:
        column = f'<span class="brats-corrected">corrected ({corrected} voxels changed)</span> (mL)'
    head = f"<tr><th>label / region</th><th>meaning</th><th>{column}</th>"
    if ts:
        head += (
            f"<th title=\"the volume if each voxel needed {ts[0]:g} or only {ts[-1]:g} of the networks' "
            f"confidence instead of the model's cut\">range at {ts[0]:g}\u2013{ts[-1]:g} (mL)</th>"
        )
    head += "<th>ground truth (mL)</th></tr>" if truth_vols is not None else "</tr>"
    meanings = {name: desc for name, desc, _ in report.volumes_table(vols)}
    rows = []
    for name, row in volume_rows(vols, truth_vols, volume_range).items():
        cells = f"<td>{name}</td><td>{html.escape(meanings[name])}</td>" + _cell(
            row["prediction"], f"{row['prediction']:.2f}", "prediction"
        )
        if ts:
            low, high = row["range_low"], row["range_high"]
            cells += (
                f'<td class="num"><span data-col="range_low" data-value="{low!r}">{low:.2f}</span>\u2013'
                f'<span data-col="range_high" data-value="{high!r}">{high:.2f}</span></td>'
            )
        if "truth" in row:
            cells += _cell(row["truth"], f"{row['truth']:.2f}", "truth")
        rows.append(f'<tr data-row="{name}">{cells}</tr>')
    table = f'<table class="brats-table"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'
    if ts:
        cut = float(volume_range.get("card_threshold", 0.5))
        table += (
            f'<div class="brats-range-note">Range: the volume if a voxel needed a network confidence of '
            f"{ts[0]:g}, or only {ts[-1]:g}, instead of {cut:g} to count. A wide range means that the model "
            "is uncertain about the tumour's edge; it is not a confidence interval.</div>"
        )
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


def size_text(n: int) -> str:
    """``1536`` -> ``"1.5 KiB"``; ``3 * 2**20`` -> ``"3.0 MiB"``."""
    return f"{n / 1024**2:.1f} MiB" if n >= 1024**2 else f"{n / 1024:.1f} KiB"


#: The model line's first figure: the whole tumour's mean Dice on unseen cases, from :func:`scores_line`
#: (a line of the card's own wording, not HTML).
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
    postprocess_text = postprocess_line(card)
    headline = _HEADLINE_SCORE.match(measured or "")
    figure = f"; mean Dice WT {headline[1]} on {headline[2]} unseen cases" if headline else ""
    spacing = "x".join(f"{s:g}" for s in card.spacing)
    roi = "x".join(str(r) for r in card.roi_size)
    flips = "test-time flips, " if card.tta_flips else ""
    details = [
        f"{len(model.networks)} network(s) on {getattr(model, 'backend', 'torch')}, {spacing} mm, "
        f"window {roi} voxels, {flips}{threads}",
        f"From {html.escape(str(model.directory))}",
    ]
    if postprocess_text:
        details.append(
            f'Post-processing: {html.escape(postprocess_text)} (tick "Keep every tumour part" to skip it).'
        )
    if measured:
        details.append(f"Measured: {html.escape(measured)}.")
        interval = interval_line(card)
        if interval:
            details.append(f"{html.escape(interval)}: how far the mean of so few cases can move.")
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
    return {
        "output_type": "display_data",
        "data": {"application/javascript": text, "text/plain": ""},
        "metadata": {},
    }


def without_paths(text: str) -> str:
    """``text`` with file-system paths of two or more parts (the server's) replaced by '...'."""
    return re.sub(r"(?<![\w.])(?:[A-Za-z]:)?[/\\](?:[^\s'\"/\\]+[/\\])+[^\s'\"]*", "...", text)


def message_html(text: str, kind: str) -> str:
    """A message box of ``kind`` (``error``, ``info``, ``warning``) holding ``text``; empty for no text."""
    if not text:
        return ""
    return f'<div class="brats-msg brats-msg-{kind}">{html.escape(text)}</div>'
