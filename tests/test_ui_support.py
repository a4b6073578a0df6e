"""Helpers and fixtures shared by the dashboard's tests (``tests/test_ui_*.py``); no tests here."""

from __future__ import annotations

import base64
import datetime as dt
import html
import io as _io
import json
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

import ipywidgets as widgets
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from brats_seg import metrics, report
from brats_seg.ui import App, example

ROOT = Path(__file__).resolve().parents[1]


def parse_table(text: str) -> dict[str, dict[str, float]]:
    """Read back a table of ``render.volumes_html`` or ``render.scores_html``: row -> column -> value."""
    out: dict[str, dict[str, float]] = {}
    for row, body in re.findall(r'<tr data-row="([^"]+)">(.*?)</tr>', text, flags=re.S):
        out[row] = {c: float(v) for c, v in re.findall(r'data-col="([^"]+)" data-value="([^"]+)"', body)}
    return out


def parse_links(text: str) -> dict[str, bytes]:
    """Decode the ``data:`` links of an HTML fragment: download name -> bytes."""
    links = re.findall(r'download="([^"]+)" href="data:[^;"]+;base64,([^"]+)"', text)
    return {html.unescape(name): base64.b64decode(payload) for name, payload in links}


def upload_value(files: Mapping[str, bytes | Path] | list[Path]) -> tuple[dict, ...]:
    """A ``FileUpload.value`` as ipywidgets 8 makes it from the browser's files."""
    if not isinstance(files, Mapping):
        files = {Path(p).name: Path(p) for p in files}
    now = dt.datetime.now(dt.UTC)
    value = []
    for name, data in files.items():
        content = data.read_bytes() if isinstance(data, Path) else bytes(data)
        value.append(
            {
                "name": name,
                "type": "application/octet-stream",
                "size": len(content),
                "content": memoryview(content),
                "last_modified": now,
            }
        )
    return tuple(value)


def study_files(paths: Mapping[str, Path], *, seg: bool = True) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for m, p in paths.items() if seg or m != "SEG"}


def make_app(model_dir: Path, tmp_path: Path, **kwargs) -> App:
    return App(model_dir=model_dir, cache_dir=tmp_path / "cache", synchronous=True, **kwargs)


def check_downloads(app: App, study_shape: tuple[int, ...], affine: np.ndarray) -> dict[str, bytes]:
    """The download links decode to NIfTI label and uncertain maps with the study's geometry, a JSON
    report and a PNG."""
    files = app.downloads()
    assert (
        parse_links(app.page.downloads_html.value) == files
    )  # the page's links hold the files the app keeps
    name = app.state.study.name
    assert set(files) == {
        f"{name}_seg.nii.gz",
        f"{name}_uncertain.nii.gz",
        f"{name}_report.json",
        f"{name}_views.png",
    }
    with tempfile.TemporaryDirectory() as tmp:
        for suffix, expected in [
            ("seg", app.state.result.segmentation.labels.array),
            ("uncertain", app.state.result.segmentation.uncertain),
        ]:
            path = Path(tmp) / f"{name}_{suffix}.nii.gz"
            path.write_bytes(files[path.name])
            image = nib.load(path)
            assert image.shape == study_shape
            np.testing.assert_allclose(image.affine, affine, atol=1e-5)
            data = np.asarray(image.dataobj)
            np.testing.assert_array_equal(data, expected)
            assert set(np.unique(data).tolist()) <= ({0, 1, 2, 4} if suffix == "seg" else {0, 1})
        assert data.any(), "the tiny model is uncertain somewhere"
        assert b"uncertain 0/1" in image.header["descrip"].tobytes() and image.header["cal_max"] == 1
    assert "Uncertain voxels (NIfTI)" in app.page.downloads_html.value
    rep = json.loads(files[f"{name}_report.json"])
    assert rep["study"] == name and rep["shape"] == list(study_shape)
    assert rep["volumes"] == json.loads(json.dumps(app.state.result.volumes))
    png = Image.open(_io.BytesIO(files[f"{name}_views.png"]))
    assert png.format == "PNG" and png.size[0] > 600
    return files


def check_numbers(app: App, *, rescore: bool = True) -> None:
    """The tables show exactly report.volumes / metrics.score of the label map (``rescore=False``:
    compare the scores with those the app computed, to save an HD95 on a big volume)."""
    labels = app.state.result.segmentation.labels
    vols = report.volumes(labels)
    shown = app.volumes_shown()
    assert parse_table(app.page.volumes_table.value) == shown  # the page shows the numbers the app keeps
    assert parse_table(app.page.metrics_table.value) == app.scores_shown()
    assert list(shown) == ["NCR", "ED", "ET", "TC", "WT"]
    for name, _, ml in report.volumes_table(vols):
        assert shown[name]["prediction"] == ml
    volume_range = app.state.result.segmentation.volume_range
    if volume_range is not None:  # the range column shows the pipeline's volumes at the other thresholds
        for (section, name), row in zip(report.TABLE_ROWS, shown.values(), strict=True):
            assert (row["range_low"], row["range_high"]) == (
                min(volume_range[section][name]),
                max(volume_range[section][name]),
            )
        assert "it is not a confidence interval" in app.page.volumes_table.value
    if app.state.study.truth is not None:
        truth_vols = report.volumes(app.state.study.truth_map)
        for name, _, ml in report.volumes_table(truth_vols):
            assert shown[name]["truth"] == ml
        scores = metrics.score(labels, app.state.study.truth_map) if rescore else app.state.result.scores
        assert app.scores_shown() == {r: {"dice": s["dice"], "hd95": s["hd95"]} for r, s in scores.items()}
    else:
        assert app.scores_shown() == {}


def predict_ok(app: App) -> None:
    """Predict is enabled, a click runs it, and the result has the input's shape."""
    assert not app.page.predict_button.disabled, app.state.message_text
    app.page.predict_button.click()
    assert app.state.message_kind == "info", app.state.message_text
    assert app.state.result is not None
    assert app.state.result.segmentation.labels.shape == app.state.study.shape
    assert app.page.progress.value == 100 and app.page.progress_label.value.startswith("Done")


def all_widgets(root: widgets.Widget) -> list[widgets.Widget]:
    out, stack = [], [root]
    while stack:
        w = stack.pop()
        out.append(w)
        stack.extend(getattr(w, "children", ()))
    return out


@pytest.fixture
def tiny_paths(tiny_study) -> dict[str, Path]:
    return tiny_study()


@pytest.fixture
def app(tiny_model_dir: Path, tmp_path: Path) -> App:
    return make_app(tiny_model_dir, tmp_path)


@pytest.fixture(autouse=True)
def no_network_example(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach the public example address."""
    real = example.CappedDownloader.__call__

    def guarded(self, url, *args, **kwargs):
        assert not str(url).startswith("https://raw.githubusercontent.com"), "tests must not download"
        return real(self, url, *args, **kwargs)

    monkeypatch.setattr(example.CappedDownloader, "__call__", guarded)
