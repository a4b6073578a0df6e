"""Tests for ``brats_seg.model``: loading learners safely, with messages that name the file."""

from __future__ import annotations

import collections
import fractions
import importlib
import json
import pathlib
import pickle
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from brats_seg import card as card_mod
from brats_seg import model as model_mod
from brats_seg.card import ModelCard
from brats_seg.errors import ModelError
from brats_seg.model import load_model, missing_modules, pickle_modules, sha256_of


def copy_model(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in ("model.json", "model.pkl"):
        shutil.copy(src / name, dst / name)
    return dst


def edit_card(folder: Path, **changes) -> None:
    card = json.loads((folder / "model.json").read_text())
    card.update(changes)
    (folder / "model.json").write_text(json.dumps(card))


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything tries to unpickle a learner."""
    import fastai.learner

    def refuse(*args, **kwargs):
        raise AssertionError("a learner was unpickled")

    monkeypatch.setattr(fastai.learner, "load_learner", refuse)
    monkeypatch.setattr(torch, "load", refuse)


# --------------------------------------------------------------------------------------------------
# sha256
# --------------------------------------------------------------------------------------------------


def test_card_sha256_mismatch_is_refused_without_unpickling(
    tiny_model_dir: Path, tmp_path: Path, no_unpickling
) -> None:
    folder = copy_model(tiny_model_dir, tmp_path / "model")
    edit_card(folder, sha256={"model.pkl": "0" * 64})
    with pytest.raises(
        ModelError, match=r"refusing to unpickle .*model\.pkl: expected sha256 0{64} .*found [0-9a-f]{64}"
    ):
        load_model(folder, device="cpu")


def test_changed_pickle_is_refused_without_unpickling(
    tiny_model_dir: Path, tmp_path: Path, no_unpickling
) -> None:
    folder = copy_model(tiny_model_dir, tmp_path / "model")
    with open(folder / "model.pkl", "ab") as f:
        f.write(b"\0")
    expected = json.loads((folder / "model.json").read_text())["sha256"]["model.pkl"]
    with pytest.raises(ModelError, match=rf"{folder / 'model.pkl'}: expected sha256 {expected}"):
        load_model(folder, device="cpu")


# --------------------------------------------------------------------------------------------------
# Modules the pickle refers to
# --------------------------------------------------------------------------------------------------


def test_tiny_learner_refers_only_to_importable_modules(tiny_model_dir: Path) -> None:
    modules = pickle_modules(tiny_model_dir / "model.pkl")
    assert {"brats_seg.training.network", "brats_seg.training.data"} <= modules
    assert "__builtin__" not in modules  # protocol-2 names are mapped as the unpickler maps them
    assert missing_modules(tiny_model_dir / "model.pkl") == []


@pytest.mark.parametrize("protocol", [2, 4])
def test_pickle_modules_reads_memoised_and_python2_names(tmp_path: Path, protocol: int) -> None:
    # several classes from one module: with protocol 4 the module name comes back through the memo;
    # with protocol 2 builtins are written as __builtin__ (range as __builtin__.xrange)
    values = [
        collections.OrderedDict(a=1),
        collections.Counter("abc"),
        collections.deque([1]),
        fractions.Fraction(1, 3),
        pathlib.PurePosixPath("x/y"),
        range(3),
        slice(1, 2),
    ]
    path = tmp_path / "obj.pt"
    torch.save({"values": values}, path, pickle_protocol=protocol)
    assert pickle_modules(path) == {type(v).__module__ for v in values}
    assert missing_modules(path) == []


def _unicode(text: str) -> bytes:
    raw = text.encode()
    return pickle.SHORT_BINUNICODE + bytes([len(raw)]) + raw


def _frame(body: bytes) -> bytes:
    return pickle.FRAME + len(body).to_bytes(8, "little") + body


def test_pickle_modules_with_a_frame_between_module_and_name(tmp_path: Path) -> None:
    # (fractions.Fraction, collections.OrderedDict, collections.Counter): a new frame starts between
    # the first module name and its attribute name, and the last module name comes from the memo
    data = (
        pickle.PROTO
        + bytes([4])
        + _frame(_unicode("fractions") + pickle.MEMOIZE)
        + _frame(
            _unicode("Fraction")
            + pickle.MEMOIZE
            + pickle.STACK_GLOBAL
            + pickle.MEMOIZE
            + _unicode("collections")
            + pickle.MEMOIZE
            + _unicode("OrderedDict")
            + pickle.MEMOIZE
            + pickle.STACK_GLOBAL
            + pickle.MEMOIZE
            + pickle.BINGET
            + bytes([3])
            + _unicode("Counter")
            + pickle.MEMOIZE
            + pickle.STACK_GLOBAL
            + pickle.MEMOIZE
            + pickle.TUPLE3
            + pickle.STOP
        )
    )
    classes = pickle.loads(data)  # a valid pickle of three classes
    assert classes == (fractions.Fraction, collections.OrderedDict, collections.Counter)
    with zipfile.ZipFile(tmp_path / "hand.pt", "w") as zf:
        zf.writestr("hand/data.pkl", data)
    assert pickle_modules(tmp_path / "hand.pt") == {c.__module__ for c in classes}


def test_pickle_modules_of_a_file_that_is_not_a_torch_zip(tmp_path: Path) -> None:
    (tmp_path / "junk.pkl").write_bytes(b"not a zip")
    assert pickle_modules(tmp_path / "junk.pkl") == set()
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02garbage")
    assert pickle_modules(tmp_path / "other.zip") == set()


FAKE_MODULE = '''
import torch


class FakeLoss(torch.nn.Module):
    """A loss that lives in a module the loading process will not have."""

    def forward(self, pred, target):
        return ((pred - target) ** 2).mean()
'''


def test_learner_referring_to_an_unimportable_module(tiny_model_dir: Path, tmp_path: Path) -> None:
    from fastai.learner import load_learner

    src = tmp_path / "src"
    src.mkdir()
    (src / "fake_loss_mod_xyz.py").write_text(FAKE_MODULE)
    folder = copy_model(tiny_model_dir, tmp_path / "model")
    sys.path.insert(0, str(src))
    importlib.invalidate_caches()
    try:
        fake = importlib.import_module("fake_loss_mod_xyz")
        learn = load_learner(folder / "model.pkl", cpu=True)
        learn.loss_func = fake.FakeLoss()
        learn.path = folder
        learn.export("model.pkl")
    finally:
        sys.path.remove(str(src))
        sys.modules.pop("fake_loss_mod_xyz", None)
        importlib.invalidate_caches()
    edit_card(folder, sha256={"model.pkl": sha256_of(folder / "model.pkl")})
    assert "fake_loss_mod_xyz" in pickle_modules(folder / "model.pkl")

    with pytest.raises(
        ModelError, match=r"model\.pkl: it refers to modules that cannot be imported here: fake_loss_mod_xyz;"
    ) as info:
        load_model(folder, device="cpu")
    assert "__main__ or a notebook" in str(info.value)
    assert "builtin" not in str(info.value)  # only the module that is really missing is named
    # the same file loads once the module is importable again
    sys.path.insert(0, str(src))
    try:
        loaded = load_model(folder, device="cpu")
    finally:
        sys.path.remove(str(src))
        sys.modules.pop("fake_loss_mod_xyz", None)
        importlib.invalidate_caches()
    assert len(loaded.networks) == 1


# --------------------------------------------------------------------------------------------------
# The model card
# --------------------------------------------------------------------------------------------------


def test_missing_model_folder_or_card(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=rf"no model card at {tmp_path / 'absent' / 'model.json'}"):
        load_model(tmp_path / "absent", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        ModelError, match=r"empty/model\.json: expected a model\.json beside the exported learner"
    ):
        load_model(tmp_path / "empty", device="cpu")


def test_card_that_is_not_json(tmp_path: Path) -> None:
    (tmp_path / "model.json").write_text('{"name": "x", ')
    with pytest.raises(ModelError, match=rf"model card {tmp_path / 'model.json'} is not valid JSON"):
        load_model(tmp_path, device="cpu")


CARD = {
    "name": "card-test",
    "files": ["model.pkl"],
    "sha256": {"model.pkl": "0" * 64},
    "channels": ["T1", "T1CE", "T2", "FLAIR"],
    "output": {"type": "regions_sigmoid", "regions": ["TC", "WT", "ET"], "threshold": 0.5},
}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"channels": ["T1", "T1", "T2", "FLAIR"]},
            r"channels must be a permutation of \['T1', 'T1CE', 'T2', 'FLAIR'\], "
            r"found \['T1', 'T1', 'T2', 'FLAIR'\]",
        ),
        (
            {"channels": ["T1", "T1CE", "T2"]},
            r"channels must be a permutation of .*, found \['T1', 'T1CE', 'T2'\]",
        ),
        (
            {"output": {"type": "logits"}},
            r"output type must be one of \('regions_sigmoid', 'classes_softmax'\), found 'logits'",
        ),
        (
            {"output": {"type": "regions_sigmoid", "regions": ["TC", "WT"]}},
            r"regions_sigmoid needs regions TC, WT, ET; found \['TC', 'WT'\]",
        ),
        (
            {"output": {"type": "classes_softmax", "classes": [0, 1, 2, 3]}},
            r"classes_softmax needs classes \[0, 1, 2, 4\]; found \[0, 1, 2, 3\]",
        ),
        ({"spacing": [1.0, 1.0]}, r"spacing and roi_size need 3 values each"),
        ({"sha256": {}}, r"no sha256 recorded for \['model\.pkl'\]"),
        ({"files": []}, r"expected at least one learner file, found none"),
        ({"channels": None}, r"invalid model card \(TypeError"),
        (
            {"output": {"type": "regions_sigmoid", "regions": ["TC", "WT", "ET"], "threshold": "0.5"}},
            r"output threshold must be a number in \(0, 1\), found '0\.5'",
        ),
        (
            {"output": {"type": "regions_sigmoid", "regions": ["TC", "WT", "ET"], "threshold": 1.0}},
            r"output threshold must be a number in \(0, 1\), found 1\.0",
        ),
        (
            {"spacing": [2.0, 0.0, 2.0]},
            r"spacing must be 3 numbers in \(0, 100\] mm, found \[2\.0, 0\.0, 2\.0\]",
        ),
        (
            {"roi_size": [64, 64.5, 64]},
            r"roi_size must be 3 integers in \[1, 1024\], found \[64, 64\.5, 64\]",
        ),
        ({"overlap": 1.0}, r"overlap must be a number in \[0, 1\), found 1\.0"),
        ({"sw_batch_size": 0}, r"sw_batch_size must be a positive integer, found 0"),
        ({"mode": "mean"}, r"mode must be 'gaussian' or 'constant', found 'mean'"),
        ({"crop_margin": -1}, r"crop_margin must be an integer >= 0, found -1"),
        ({"tta_flips": "yes"}, r"tta_flips must be true or false, found 'yes'"),
        (
            {"orientation": "LPP"},
            r"orientation must be 3 upper-case axis codes, one of L/R, P/A, S/I each \(e\.g\. 'LPS'\), "
            r"found 'LPP'",
        ),
        ({"orientation": "lps"}, r"orientation must be 3 upper-case axis codes, .*found 'lps'"),
        ({"overlap": 2, "mode": "x"}, r"overlap must be .*found 2; mode must be .*found 'x'"),
    ],
)
def test_invalid_card_is_refused_naming_the_file(tmp_path: Path, changes: dict, message: str) -> None:
    (tmp_path / "model.json").write_text(json.dumps({**CARD, **changes}))
    with pytest.raises(ModelError, match=rf"{tmp_path / 'model.json'}.*{message}"):
        load_model(tmp_path, device="cpu")


def test_card_missing_required_keys(tmp_path: Path) -> None:
    card = {k: v for k, v in CARD.items() if k not in ("sha256", "output")}
    (tmp_path / "model.json").write_text(json.dumps(card))
    with pytest.raises(
        ModelError,
        match=rf"{tmp_path / 'model.json'}: model card is missing required keys \['output', 'sha256'\]",
    ):
        load_model(tmp_path, device="cpu")


def test_card_listing_a_missing_learner(tmp_path: Path) -> None:
    (tmp_path / "model.json").write_text(json.dumps(CARD))
    with pytest.raises(ModelError, match=rf"exported learner {tmp_path / 'model.pkl'} not found"):
        load_model(tmp_path, device="cpu")


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def test_ensemble_loads_every_listed_learner(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = copy_model(tiny_model_dir, tmp_path / "ensemble")
    shutil.copy(folder / "model.pkl", folder / "second.pkl")
    card = ModelCard.load(folder / "model.json")
    card.files = ["model.pkl", "second.pkl"]
    card.sha256 = {name: sha256_of(folder / name) for name in card.files}
    card.save(folder / "model.json")
    loaded = load_model(folder, device="cpu")
    assert len(loaded.networks) == 2 and loaded.networks[0] is not loaded.networks[1]
    assert all(not net.training for net in loaded.networks)
    assert all(p.device.type == "cpu" for net in loaded.networks for p in net.parameters())
    assert loaded.card.files == ["model.pkl", "second.pkl"] and loaded.directory == folder


def test_default_model_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(card_mod.MODEL_ENV, str(tmp_path))
    assert card_mod.default_model_dir() == tmp_path
    with pytest.raises(ModelError, match=rf"no model card at {tmp_path / 'model.json'}"):
        load_model(device="cpu")
    monkeypatch.delenv(card_mod.MODEL_ENV)
    assert card_mod.default_model_dir() == card_mod.BUNDLED_MODEL_DIR


# --------------------------------------------------------------------------------------------------
# The bundled model
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundled_card() -> ModelCard:
    path = card_mod.BUNDLED_MODEL_DIR / "model.json"
    if not path.is_file():
        pytest.skip("no bundled model in model/")
    return ModelCard.load(path)


def test_bundled_model_files_match_the_card(bundled_card: ModelCard) -> None:
    folder = card_mod.BUNDLED_MODEL_DIR
    total = 0
    for name in bundled_card.files:
        assert sha256_of(folder / name) == bundled_card.sha256[name], name
        total += (folder / name).stat().st_size
    assert total < 100 * 2**20, f"model/ learners total {total / 2**20:.1f} MiB, the limit is 100 MiB"
    assert "not for clinical use" in bundled_card.extra["intended_use"]
    assert bundled_card.channels == ["T1", "T1CE", "T2", "FLAIR"]
    model = load_model(folder, device="cpu")
    assert len(model.networks) == len(bundled_card.files)


def test_bundled_model_scores_come_from_cases_no_scoring_member_saw(bundled_card: ModelCard) -> None:
    """The shipped ensemble is one model per fold of a k-fold split; its card's scores are the
    cross-validation: each case scored only by the member that held it out."""
    members = bundled_card.extra["members"]
    assert [m["file"] for m in members] == bundled_card.files
    held_by: dict[str, list[str]] = {}
    for member in members:
        training = member["training"]
        assert "BraTS" in training["data"]
        assert not set(training["held_out_cases"]) & set(training["train_cases"]), member["file"]
        for case in training["held_out_cases"]:
            held_by.setdefault(case, []).append(member["file"])
    assert all(len(files) == 1 for files in held_by.values()), (
        "k-fold: every case is held out by exactly one member"
    )
    scores = bundled_card.extra["scores"]["cross_validation"]
    assert set(scores["cases"]) == set(held_by) and scores["n"] == len(held_by) >= 20
    assert "brats-seg evaluate" in scores["command"] and "--cross-validation" in scores["command"]
    assert {"dice_WT", "dice_TC", "dice_ET", "hd95_WT"} <= set(scores["metrics"])


def _card_with_scores(tiny_model_dir: Path, scores: dict) -> ModelCard:
    card = ModelCard.load(tiny_model_dir / "model.json")
    card.extra = {**card.extra, "scores": scores}
    return card


def _record(n: int, **means: float) -> dict:
    return {
        "cases": [f"c{i}" for i in range(n)],
        "n": n,
        "command": "brats-seg evaluate",
        "metrics": {k: {"mean": v, "median": v} for k, v in means.items()},
    }


def test_scores_line_prefers_cross_validation_and_says_how_it_was_measured(tiny_model_dir: Path) -> None:
    from brats_seg.card import scores_line

    cv = _record(23, dice_WT=0.8331, dice_TC=0.7449, dice_ET=0.7012, hd95_WT=14.851)
    held = _record(5, dice_WT=0.81, dice_TC=0.64, dice_ET=0.64)
    assert scores_line(_card_with_scores(tiny_model_dir, {"held_out": held, "cross_validation": cv})) == (
        "mean Dice WT 0.833, TC 0.745, ET 0.701; WT HD95 14.9 mm over 23 cases, each scored by a member that "
        "never saw it (cross-validation)"
    )
    assert scores_line(_card_with_scores(tiny_model_dir, {"held_out": held})) == (
        "mean Dice WT 0.810, TC 0.640, ET 0.640 over 5 cases that no member saw (held-out cases)"
    )
    # scores on seen cases, or none at all, are not presented as a measure of the model
    assert scores_line(_card_with_scores(tiny_model_dir, {"training_cases": cv})) is None
    assert scores_line(_card_with_scores(tiny_model_dir, {})) is None
    # with test-time flips on, the flipped record of the same kind is the one that describes the model
    tta = _record(23, dice_WT=0.8361, dice_TC=0.748, dice_ET=0.707)
    card = _card_with_scores(tiny_model_dir, {"cross_validation": cv, "cross_validation_tta": tta})
    assert "WT 0.833" in scores_line(card)
    card.tta_flips = True
    assert "WT 0.836" in scores_line(card)
    # a nested record (post-processing chosen without the scored fold) describes a tuned card best
    # a card that turns flips on but has no flipped record of that kind says so
    card = _card_with_scores(tiny_model_dir, {"cross_validation": cv})
    card.tta_flips = True
    assert scores_line(card).endswith(
        "(cross-validation), measured without the test-time flips this card turns on"
    )
    nested = _record(23, dice_WT=0.834, dice_TC=0.754, dice_ET=0.698, hd95_WT=10.9)
    assert scores_line(
        _card_with_scores(tiny_model_dir, {"cross_validation": cv, "cross_validation_nested": nested})
    ) == (
        "mean Dice WT 0.834, TC 0.754, ET 0.698; WT HD95 10.9 mm over 23 cases, each scored by a member that "
        "never saw it, with post-processing chosen without it (nested cross-validation)"
    )


def test_interval_line_states_the_bootstrap_intervals_of_the_record_scores_line_uses(
    tiny_model_dir: Path,
) -> None:
    from brats_seg.card import interval_line

    cv = _record(23, dice_WT=0.84, dice_TC=0.77, dice_ET=0.715, hd95_WT=10.96)
    for key, (low, high) in {
        "dice_WT": (0.7912, 0.8791),
        "dice_TC": (0.681, 0.851),
        "dice_ET": (0.637, 0.79),
        "hd95_WT": (5.94, 18.04),
    }.items():
        cv["metrics"][key].update(ci_low=low, ci_high=high)
    held = _record(5, dice_WT=0.81)
    held["metrics"]["dice_WT"].update(ci_low=0.5, ci_high=0.9)
    assert interval_line(_card_with_scores(tiny_model_dir, {"held_out": held, "cross_validation": cv})) == (
        "95% intervals of these means (bootstrap over the 23 cases): "
        "Dice WT 0.79\u20130.88, TC 0.68\u20130.85, "
        "ET 0.64\u20130.79; WT HD95 5.9\u201318.0 mm"
    )
    # scores recorded before intervals were: no line, rather than a made-up one
    assert (
        interval_line(_card_with_scores(tiny_model_dir, {"cross_validation": _record(23, dice_WT=0.84)}))
        is None
    )
    # a malformed interval is left out, the rest kept
    cv["metrics"]["dice_TC"].update(ci_low="0.6")
    cv["metrics"]["dice_ET"].update(ci_low=0.9, ci_high=0.1)
    assert interval_line(_card_with_scores(tiny_model_dir, {"cross_validation": cv})) == (
        "95% intervals of these means (bootstrap over the 23 cases): "
        "Dice WT 0.79\u20130.88; WT HD95 5.9\u201318.0 mm"
    )
    assert interval_line(_card_with_scores(tiny_model_dir, {})) is None


@pytest.mark.parametrize(
    "scores",
    [
        ["not", "a", "dict"],
        "0.9",
        {"cross_validation": "0.9"},
        {"cross_validation": {"n": 3, "metrics": ["dice_WT"]}},
        {"cross_validation": {"n": 3, "metrics": "dice_WT"}},
        {"cross_validation": {"n": 3, "metrics": {"dice_WT": 0.8}}},
        {"cross_validation": {"n": 3, "metrics": {"dice_WT": {"median": 0.8}}}},
        {"cross_validation": {"n": 3, "metrics": {"dice_WT": {"mean": None}}}},
        {"cross_validation": {"n": 3, "metrics": {"dice_WT": {"mean": "0.8"}}}},
        {"cross_validation": {"n": 3, "metrics": {"dice_WT": {"mean": float("nan")}}}},
        {"cross_validation": {"n": 3, "metrics": {"dice_WT": {"mean": True}}}},
        {"cross_validation": {"cases": None, "metrics": {"dice_WT": {"mean": 0.8}}}},
        {"cross_validation": {"n": "3", "metrics": {"dice_WT": {"mean": 0.8}}}},
    ],
)
def test_scores_line_skips_malformed_records_instead_of_raising(scores, tiny_model_dir: Path) -> None:
    """The dashboard shows this line for any card a user points it at: a bad record is left out."""
    from brats_seg.card import scores_line

    assert scores_line(_card_with_scores(tiny_model_dir, scores)) is None
    good = _record(4, dice_WT=0.5)
    if isinstance(scores, dict):
        assert scores_line(_card_with_scores(tiny_model_dir, {**scores, "held_out": good})) == (
            "mean Dice WT 0.500 over 4 cases that no member saw (held-out cases)"
        )


def test_bundled_model_card_states_its_unseen_case_scores(bundled_card: ModelCard) -> None:
    from brats_seg.card import interval_line, scores_line

    line = scores_line(bundled_card)
    # with post-processing the estimate must be the nested one (its setting tuned without the scored
    # cases); without, plain cross-validation is already unseen-case scoring
    kind = "cross_validation_nested" if bundled_card.postprocess else "cross_validation"
    key = kind + ("_tta" if bundled_card.tta_flips else "")
    dice_wt = bundled_card.extra["scores"][key]["metrics"]["dice_WT"]["mean"]
    assert line is not None and f"WT {dice_wt:.3f}" in line
    assert ("(nested cross-validation)" in line) == bool(bundled_card.postprocess)
    assert "measured without the test-time flips" not in line  # measured as the card predicts
    # the figures the READMEs quote
    assert line.startswith("mean Dice WT 0.858, TC 0.778, ET 0.719; WT HD95 9.7 mm over 23 cases")
    # and their intervals, recorded by the same evaluate command
    assert interval_line(bundled_card) == (
        "95% intervals of these means (bootstrap over the 23 cases): Dice WT "
        "0.82\u20130.89, TC 0.69\u20130.85, ET 0.64\u20130.79; WT HD95 6.2\u201314.6 mm"
    )


@pytest.mark.parametrize(
    ("postprocess", "expected"),
    [
        ({}, None),
        ({"min_component_fraction": 0.5}, "tumour parts smaller than 50% of the largest part are removed"),
        (
            {"min_component_mm3": 5000.0, "et_min_mm3": 300},
            "tumour parts under 5 cm³ are removed (never the largest); "
            "enhancing tumour under 0.3 cm³ in all is relabelled necrotic core",
        ),
        ({"min_component_fraction": 0.0, "min_component_mm3": float("nan"), "et_min_mm3": True}, None),
        ({"min_component_fraction": 1.0}, "only the largest tumour part is kept"),
        ({"min_component_fraction": 0.005}, "tumour parts smaller than 0.5% of the largest part are removed"),
        ({"min_component_mm3": 10**400, "et_min_mm3": "300"}, None),  # too large for a float; not a number
        ([], None),
    ],
)
def test_postprocess_line_says_what_the_card_removes(
    postprocess: dict, expected: str | None, tiny_model_dir: Path
) -> None:
    from brats_seg.card import postprocess_line

    card = ModelCard.load(tiny_model_dir / "model.json")
    card.postprocess = postprocess
    assert postprocess_line(card) == expected


def test_module_renames_let_a_learner_load_after_its_module_moved(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastai.learner import load_learner

    src = tmp_path / "src"
    src.mkdir()
    (src / "old_loss_mod_xyz.py").write_text(FAKE_MODULE)
    folder = copy_model(tiny_model_dir, tmp_path / "model")
    sys.path.insert(0, str(src))
    importlib.invalidate_caches()
    try:
        old = importlib.import_module("old_loss_mod_xyz")
        learn = load_learner(folder / "model.pkl", cpu=True)
        learn.loss_func = old.FakeLoss()
        learn.path = folder
        learn.export("model.pkl")
    finally:
        sys.modules.pop("old_loss_mod_xyz", None)
    (src / "old_loss_mod_xyz.py").rename(src / "new_loss_mod_xyz.py")  # the module moved
    importlib.invalidate_caches()
    edit_card(folder, sha256={"model.pkl": sha256_of(folder / "model.pkl")})
    try:
        assert missing_modules(folder / "model.pkl") == ["old_loss_mod_xyz"]
        monkeypatch.setitem(model_mod.MODULE_RENAMES, "old_loss_mod_xyz", "new_loss_mod_xyz")
        assert "old_loss_mod_xyz" in pickle_modules(folder / "model.pkl")  # the pickle's own names
        assert missing_modules(folder / "model.pkl") == []
        loaded = load_model(folder, device="cpu")
    finally:
        sys.path.remove(str(src))
        sys.modules.pop("new_loss_mod_xyz", None)
        importlib.invalidate_caches()
    assert len(loaded.networks) == 1
