"""Tests for the model line (:mod:`brats_seg.ui.model_line`) and the prediction settings the
model card offers (keep every tumour part, quick prediction)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from test_ui_support import make_app, predict_ok, upload_value

from brats_seg.ui import App

#: The shared fixtures (``app``, ``tiny_paths``, and no test reaching the public example address).
pytest_plugins = ["test_ui_support"]


def test_model_error_is_shown_and_the_app_stays_usable(
    tiny_model_dir: Path, tiny_paths: dict[str, Path], tmp_path: Path
) -> None:
    app = make_app(tmp_path / "no_model", tmp_path)
    app.page.upload.value = upload_value(list(tiny_paths.values()))
    app.page.predict_button.click()
    assert app.state.message_kind == "error" and "model.json" in app.state.message_text
    assert "Model not available" in app.page.model_status.value
    assert not app.page.predict_button.disabled
    app.model_dir = tiny_model_dir  # the folder is fixed: the next click works
    predict_ok(app)


def test_model_status_states_the_cards_unseen_case_scores(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A researcher sees how well the model did on cases it never saw, next to its name."""
    import shutil

    from brats_seg.card import record_scores

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    summary = {
        "dice_WT": {"mean": 0.9},
        "dice_TC": {"mean": 0.8},
        "dice_ET": {"mean": 0.7},
        "hd95_WT": {"mean": 4.25},
    }
    record_scores(
        model_dir / "model.json",
        summary,
        cases=["a", "b", "c"],
        command="brats-seg evaluate --cross-validation",
        key="cross_validation",
    )
    app = App(model_dir=model_dir, cache_dir=tmp_path / "cache", synchronous=True)
    app.model()
    assert (
        "Measured: mean Dice WT 0.900, TC 0.800, ET 0.700; WT HD95 4.2 mm over 3 cases, each scored by a "
        "member that never saw it (cross-validation)" in app.page.model_status.value
    )
    assert "for research only; mean Dice WT 0.900 on 3 unseen cases<details" in app.page.model_status.value

    assert "Post-processing:" not in app.page.model_status.value  # the tiny card has none

    bare = App(model_dir=tiny_model_dir, cache_dir=tmp_path / "cache2", synchronous=True)
    bare.model()
    assert "ready" in bare.page.model_status.value and "Measured:" not in bare.page.model_status.value


def _model_removing_small_parts(tiny_model_dir: Path, model_dir: Path) -> Path:
    """A copy of the tiny model whose card removes tumour parts under half the largest."""
    import shutil

    from brats_seg.card import ModelCard

    shutil.copytree(tiny_model_dir, model_dir)
    card = ModelCard.load(model_dir / "model.json")
    card.postprocess = {"min_component_fraction": 0.5}
    card.save(model_dir / "model.json")
    return model_dir


def test_model_line_is_a_short_summary_with_the_details_folded(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The page shows one calm line; networks, spacing, threads, folder and scores are one click away."""
    from brats_seg.card import ModelCard, record_scores

    model_dir = _model_removing_small_parts(tiny_model_dir, tmp_path / "model")
    summary = {
        "dice_WT": {"mean": 0.9, "ci_low": 0.85, "ci_high": 0.95},
        "dice_TC": {"mean": 0.8},
        "dice_ET": {"mean": 0.7},
    }
    record_scores(
        model_dir / "model.json", summary, cases=["a", "b"], command="brats-seg evaluate", key="held_out"
    )
    app = make_app(model_dir, tmp_path / "app")
    app.model()
    value = app.page.model_status.value
    match = re.fullmatch(
        r"Model: <b>(?P<name>[^<]+)</b> ready \u2014 for research only(?P<figure>[^<]*)"
        r'<details class="brats-model-details"><summary>Details</summary>(?P<details>.*)</details>',
        value,
        flags=re.S,
    )
    assert match, f"expected a short line and a <details> element, found {value!r}"
    assert (
        match["name"] == ModelCard.load(model_dir / "model.json").name
        and match["figure"] == "; mean Dice WT 0.900 on 2 unseen cases"
    )
    details = match["details"].split("<br>")
    assert (
        details[0].startswith(f"{len(app.model().networks)} network(s) on {app.model().backend}, ")
        and "CPU thread(s)" in details[0]
    )
    assert details[0].count(" mm, window ") == 1
    assert details[1] == f"From {model_dir}"
    assert details[2].startswith("Post-processing: tumour parts smaller than 50%")
    assert details[3].startswith("Measured: mean Dice WT 0.900, TC 0.800, ET 0.700 over 2 cases")
    assert details[4] == (
        "95% intervals of these means (bootstrap over the 2 cases): Dice WT 0.85\u20130.95: "
        "how far the mean of so few cases can move."
    )
    assert len(details) == 5
    # a card without scores: the short line has no figure, the details no "Measured"
    bare = make_app(tiny_model_dir, tmp_path / "bare")
    bare.model()
    assert (
        bare.page.model_status.value.startswith("Model: <b>")
        and "unseen cases" not in bare.page.model_status.value
    )
    assert "ready \u2014 for research only<details" in bare.page.model_status.value


def test_keep_every_part_skips_the_cards_post_processing(
    tiny_model_dir: Path, tmp_path: Path, tiny_paths: dict[str, Path]
) -> None:
    """The researcher can see the network's own output, separate tumour parts included."""
    import shutil

    from brats_seg.card import ModelCard

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    card = ModelCard.load(model_dir / "model.json")
    card.postprocess = {"et_min_mm3": 1e9}  # every enhancing tumour becomes necrotic core
    card.save(model_dir / "model.json")
    app = make_app(model_dir, tmp_path / "app")
    assert app.page.keep_parts.layout.display == ""  # offered: this card's post-processing changes labels
    assert (
        make_app(tiny_model_dir, tmp_path / "plain").page.keep_parts.layout.display == "none"
    )  # nothing to skip
    app.page.upload.value = upload_value(list(tiny_paths.values()))
    assert app.page.keep_parts.value is False
    predict_ok(app)
    cleaned = app.state.result.segmentation.labels.array.copy()
    assert app.state.result.report["settings"]["postprocess"]["et_min_mm3"] == 1e9
    app.page.keep_parts.value = True
    predict_ok(app)
    raw = app.state.result.segmentation.labels.array
    assert "postprocess" not in app.state.result.report["settings"]
    assert (cleaned == 4).sum() == 0 < (raw == 4).sum()  # the network's own ET is back
    assert np.array_equal(raw > 0, cleaned > 0)  # the rule relabels, it removes no tumour here


def test_quick_prediction_skips_the_cards_test_time_flips(
    tiny_model_dir: Path, tmp_path: Path, tiny_paths: dict[str, Path]
) -> None:
    """A card that flips by default offers a quicker run without them; a card that does not, hides the box."""
    import shutil

    from brats_seg.card import ModelCard

    plain = make_app(tiny_model_dir, tmp_path / "plain")
    assert plain.page.quick.layout.display == "none"
    plain.model()
    assert (
        plain.page.quick.layout.display == "none" and "test-time flips" not in plain.page.model_status.value
    )

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    card = ModelCard.load(model_dir / "model.json")
    card.tta_flips = True
    card.save(model_dir / "model.json")
    app = make_app(model_dir, tmp_path / "app")
    assert app.page.quick.layout.display == "" and app._model is None  # offered before the networks load
    app.page.upload.value = upload_value(list(tiny_paths.values()))
    predict_ok(app)
    assert app.page.quick.layout.display == "" and "test-time flips, " in app.page.model_status.value
    assert app.state.result.report["settings"]["tta_flips"] is True
    assert "Quick prediction" not in app.page.progress_label.value
    flipped = app.state.result.segmentation.labels.array.copy()
    app.page.quick.value = True
    # the labels shown were made with the flips: the page says so until Predict runs again
    assert (
        app.page.progress_label.value == "Settings changed: press Predict to apply them to the labels shown."
    )
    predict_ok(app)
    assert app.page.progress_label.value.endswith("). Quick prediction: no test-time flips.")
    assert app.state.result.report["settings"]["tta_flips"] is False
    app.page.keep_parts.value = True
    assert app.page.progress_label.value.startswith("Settings changed")
    assert not np.array_equal(app.state.result.segmentation.labels.array, flipped)  # a different prediction


def test_model_status_says_what_post_processing_removes(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A tuned card removes small tumour parts; the researcher is told, not left to wonder."""
    model_dir = _model_removing_small_parts(tiny_model_dir, tmp_path / "model")
    app = App(model_dir=model_dir, cache_dir=tmp_path / "cache", synchronous=True)
    app.model()
    assert (
        "<br>Post-processing: tumour parts smaller than 50% of the largest part are removed "
        '(tick "Keep every '
        'tumour part" to skip it).'
    ) in app.page.model_status.value


def test_bad_thread_setting_is_reported_and_the_model_still_loads(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from brats_seg.inference import THREADS_ENV

    monkeypatch.setenv(THREADS_ENV, "lots")
    before = torch.get_num_threads()
    app = App(model_dir=tiny_model_dir, cache_dir=tmp_path, synchronous=True)
    app.model()
    assert "ready" in app.page.model_status.value
    assert (
        "BRATS_SEG_TORCH_THREADS: expected a positive integer, found &#x27;lots&#x27;"
        in app.page.model_status.value
    )
    assert torch.get_num_threads() == before
