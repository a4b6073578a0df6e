"""The training recipe end to end on tiny generated data: train, export, load, predict."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from brats_seg import train
from brats_seg.card import ModelCard
from brats_seg.cli import main
from brats_seg.model import load_model, pickle_modules


def test_train_exports_learner_and_card(tiny_model_dir: Path) -> None:
    card = ModelCard.load(tiny_model_dir / "model.json")
    assert card.files == ["model.pkl"]
    assert (tiny_model_dir / "model.pkl").is_file()
    assert card.output == {"type": "regions_sigmoid", "regions": ["TC", "WT", "ET"], "threshold": 0.5}
    assert card.spacing == [2.0, 2.0, 2.0]
    assert card.roi_size == [16, 16, 16]
    assert "not for clinical use" in card.extra["intended_use"]
    training = card.extra["training"]
    assert training["epochs"] == 2 and training["fold"] == 0
    assert len(training["held_out_cases"]) == 1 and len(training["train_cases"]) == 2
    assert set(card.extra["versions"]) >= {"python", "torch", "monai", "fastai"}
    splits = json.loads((tiny_model_dir / "splits.json").read_text())
    assert splits["k"] == 3 and sorted(sum(splits["folds"], [])) == ["Tiny-003", "Tiny_001", "Tiny_002"]
    rows = list(csv.DictReader(open(tiny_model_dir / "history.csv")))
    assert len(rows) == 2 and {"train_loss", "valid_loss", "dice_tc", "dice_wt", "dice_et"} <= set(rows[0])
    assert (tiny_model_dir / "models" / "last.pth").is_file()


def test_exported_pickle_refers_only_to_importable_modules(tiny_model_dir: Path) -> None:
    modules = pickle_modules(tiny_model_dir / "model.pkl")
    assert "__main__" not in modules
    assert "brats_seg.train" in modules
    assert any(m.startswith("monai.") for m in modules) and any(m.startswith("fastai.") for m in modules)


def test_predict_uses_the_trained_learner(tiny_model_dir: Path, tiny_study_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["predict", str(tiny_study_dir), "--output", str(out), "--model", str(tiny_model_dir), "--no-progress"]) == 0
    report = json.loads((out / "Tiny_001_report.json").read_text())
    card = ModelCard.load(tiny_model_dir / "model.json")
    assert report["model"]["files"]["model.pkl"] == card.sha256["model.pkl"]


def test_resume_continues_from_checkpoint(tiny_data_dir: Path, tmp_path: Path, capsys) -> None:
    from conftest import TINY_TRAIN_ARGS

    out = tmp_path / "run"
    args = ["train", str(tiny_data_dir), "--output", str(out), *TINY_TRAIN_ARGS]
    assert main(args) == 0
    epochs = args.index("--epochs") + 1
    args[epochs] = "3"
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    logged = re.findall(r"^epoch (\d+)/3 ", capsys.readouterr().out, flags=re.M)
    assert logged == ["3"]  # only the epoch left is trained, not the whole schedule again
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]  # one table: epochs 0, 1, then 2 after resuming
    assert json.loads((out / "models" / "last.json").read_text())["epoch"] == 2
    trained_on = ModelCard.load(out / "model.json").extra["training"]["trained_on"]
    assert len(trained_on) == 2 and trained_on[0].startswith("CPU") and trained_on[0].endswith("fp32, from epoch 1")
    assert trained_on[1].endswith("fp32, from epoch 3")  # each session of a resumed run is recorded


def test_resume_with_other_network_settings_is_refused(tiny_data_dir: Path, tmp_path: Path, capsys) -> None:
    from conftest import TINY_TRAIN_ARGS

    out = tmp_path / "run"
    args = ["train", str(tiny_data_dir), "--output", str(out), *TINY_TRAIN_ARGS]
    assert main(args) == 0
    channels = args.index("--channels")
    args[channels + 1: channels + 4] = ["8", "16", "32"]
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'models' / 'last.pth'}: cannot resume from this checkpoint, it does not fit the network" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(("damage", "message"), [
    ("garbage", r"cannot resume from this checkpoint, it does not fit the network asked for .* or is damaged \(\w+"),
    ("missing", "expected the checkpoint that last.json beside it describes, found none"),
])
def test_resume_from_a_damaged_or_missing_checkpoint_is_refused_and_changes_nothing(
        damage: str, message: str, tiny_data_dir: Path, tmp_path: Path, capsys) -> None:
    from conftest import TINY_TRAIN_ARGS

    out = tmp_path / "run"
    args = ["train", str(tiny_data_dir), "--output", str(out), *TINY_TRAIN_ARGS]
    assert main(args) == 0
    checkpoint = out / "models" / "last.pth"
    if damage == "garbage":
        checkpoint.write_bytes(b"\x80\x04not a checkpoint" * 10)
    else:
        checkpoint.unlink()
    before = {p: p.read_bytes() for p in [out / "history.csv", out / "train_meta.json", out / "models" / "last.json"]}
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert str(checkpoint) in err and re.search(message, err) and "Traceback" not in err
    assert {p: p.read_bytes() for p in before} == before


def test_an_epoch_logged_but_not_checkpointed_is_logged_once(tiny_data_dir: Path, tmp_path: Path) -> None:
    from conftest import TINY_TRAIN_ARGS

    out = tmp_path / "run"
    args = ["train", str(tiny_data_dir), "--output", str(out), *TINY_TRAIN_ARGS]
    assert main(args) == 0
    state = out / "models" / "last.json"
    state.write_text(json.dumps({"epoch": 0, "n_epoch": 2}))  # as if killed between epoch 1's log row and its checkpoint
    assert main([*args, "--resume"]) == 0
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1"]


def test_history_log_with_a_progress_bar_skips_epochs_and_restores_the_logger(tmp_path: Path) -> None:
    from fastai.callback.progress import ProgressCallback
    from fastai.test_utils import synth_learner

    learn = synth_learner(n_trn=32, path=tmp_path, cbs=[train.HistoryLog("history.csv")])
    assert any(isinstance(cb, ProgressCallback) for cb in learn.cbs)
    logger = learn.logger
    train.fit_flat_cos(learn, 3, lr=1e-2, pct_start=0.5, start_epoch=2)
    assert learn.logger is logger
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert [r["epoch"] for r in rows] == ["2"]


def test_make_folds_is_seeded_and_partitions() -> None:
    names = [f"case{i:02d}" for i in range(23)]
    folds = train.make_folds(names, k=5, seed=0)
    assert folds == train.make_folds(names, k=5, seed=0)
    assert folds != train.make_folds(names, k=5, seed=1)
    assert sorted(sum(folds, [])) == names
    assert sorted(len(f) for f in folds) == [4, 4, 5, 5, 5]
    with pytest.raises(ValueError, match="3 cases cannot make 5 folds"):
        train.make_folds(names[:3], k=5)


def test_patch_dataset_shapes_and_tumour_bias() -> None:
    image = torch.randn(4, 40, 40, 40)
    target = torch.zeros(3, 40, 40, 40)
    target[:, 5:10, 5:10, 5:10] = 1
    case = train.make_case("c", image, target)
    ds = train.PatchDataset([case], patch_size=(16, 16, 16), length=20, pos_fraction=1.0, augment=False, seed=0)
    hits = 0
    for i in range(len(ds)):
        img, tgt = ds[i]
        assert img.shape == (4, 16, 16, 16) and tgt.shape == (3, 16, 16, 16)
        hits += int(tgt.sum() > 0)
    assert hits == 20  # every centre drawn from the tumour
    assert len(ds.new_empty()) == 0


@pytest.mark.parametrize("intensity", ["mild", "strong", "strong-bias", "none"])
def test_augmentations_keep_shapes_labels_and_finite_values(intensity: str) -> None:
    tfms = train.augmentations(intensity=intensity)
    tfms.set_random_state(seed=0)
    image = torch.randn(4, 24, 24, 24)
    label = torch.zeros(3, 24, 24, 24)
    label[:, 8:16, 8:16, 8:16] = 1
    changed = 0
    for _ in range(8):
        out = tfms({"image": image.clone(), "label": label.clone()})
        img = torch.as_tensor(out["image"])
        assert img.shape == image.shape and torch.isfinite(img).all()
        assert torch.as_tensor(out["label"]).shape == label.shape
        changed += int(not torch.allclose(img, image))
    assert changed > 0


def test_strong_intensity_augmentation_changes_channels_independently() -> None:
    tfms = train.augmentations(flip=False, zoom=False, affine=False, intensity="strong")
    tfms.set_random_state(seed=1)
    image = torch.randn(1, 16, 16, 16).repeat(4, 1, 1, 1)  # four identical channels
    differs = 0
    for _ in range(10):
        img = torch.as_tensor(tfms({"image": image.clone(), "label": torch.zeros(3, 16, 16, 16)})["image"])
        differs += int(not torch.allclose(img[0], img[1]))
    assert differs > 0, "per-channel scaling should make identical channels differ"
    # "mild" scales and shifts every channel together.
    mild = train.augmentations(flip=False, zoom=False, affine=False, intensity="mild")
    mild.set_random_state(seed=1)
    for _ in range(5):
        img = torch.as_tensor(mild({"image": image.clone(), "label": torch.zeros(3, 16, 16, 16)})["image"])
        assert torch.allclose(img[0], img[3])


def test_bias_field_is_smooth_shared_by_the_channels_and_keeps_the_background() -> None:
    """The coil bias field multiplies every channel by the same smooth field, as if before z-scoring,
    leaves the background at 0, and is reproducible from a seed (MONAI's Compose seeds it)."""
    image = torch.zeros(4, 24, 24, 24)
    image[:, 4:20, 4:20, 4:20] = torch.randn(4, 16, 16, 16)
    image[:, 4:20, 4:20, 4:20][image[:, 4:20, 4:20, 4:20] == 0] = 0.5  # every brain voxel non-zero
    bias = train.BrainBiasField("image", prob=1.0, sigma=0.3, shift=3.0).set_random_state(seed=0)
    out = bias({"image": image.clone(), "label": torch.ones(3, 24, 24, 24)})
    img = out["image"]
    assert torch.equal(out["label"], torch.ones(3, 24, 24, 24)), "labels must not change"
    brain = image.abs().sum(0) > 0
    assert torch.equal(img[:, ~brain], torch.zeros(4, int((~brain).sum()))), "the background stays 0"
    field = (img[:, brain] + 3.0) / (image[:, brain] + 3.0)
    assert torch.allclose(field, field[0:1].expand_as(field), atol=1e-4), "one field for all four channels"
    assert 0.4 < float(field.min()) < float(field.max()) < 2.5 and float(field.max() - field.min()) > 0.05
    f = bias.field((24, 24, 24))
    steps = max(float(f.diff(dim=d).abs().max()) for d in range(3))
    assert steps < float(f.max() - f.min()) / 5, "the field varies slowly across the patch, not voxel to voxel"
    again = train.BrainBiasField("image", prob=1.0, sigma=0.3).set_random_state(seed=0)({"image": image.clone()})["image"]
    assert torch.equal(again, img)
    assert torch.equal(train.BrainBiasField("image", prob=0.0)({"image": image})["image"], image)
    with pytest.raises(ValueError, match="expected 0 <= prob <= 1"):
        train.BrainBiasField("image", prob=1.5)
    # "strong-bias" is "strong" with the field first among the intensity transforms
    names = [type(t).__name__ for t in train.augmentations(intensity="strong-bias").transforms]
    strong = [type(t).__name__ for t in train.augmentations(intensity="strong").transforms]
    assert names == strong[:5] + ["BrainBiasField"] + strong[5:]


def test_unknown_intensity_augmentation_is_refused(capsys) -> None:
    with pytest.raises(ValueError, match=r"expected one of \('mild', 'strong', 'strong-bias', 'none'\), found 'wild'"):
        train.augmentations(intensity="wild")
    with pytest.raises(SystemExit):
        main(["train", "data", "--output", "out", "--intensity-augment", "wild"])
    assert "invalid choice: 'wild'" in capsys.readouterr().err


def test_patch_dataset_reseed_starts_a_new_reproducible_stream() -> None:
    image = torch.randn(4, 24, 24, 24)
    target = torch.zeros(3, 24, 24, 24)
    target[:, 8:14, 8:14, 8:14] = 1
    case = train.make_case("c", image, target)

    def first_patches(ds: train.PatchDataset) -> list[torch.Tensor]:
        return [ds[i][0] for i in range(3)]

    a = first_patches(train.PatchDataset([case], patch_size=(8, 8, 8), seed=0))
    ds = train.PatchDataset([case], patch_size=(8, 8, 8), seed=0)
    ds.reseed(12345)
    b = first_patches(ds)
    again = train.PatchDataset([case], patch_size=(8, 8, 8), seed=0)
    again.reseed(12345)
    assert not all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(torch.equal(x, y) for x, y in zip(b, first_patches(again), strict=True))


def test_crop_patch_pads_outside_the_volume() -> None:
    image = torch.ones(4, 10, 10, 10)
    case = train.make_case("c", image, torch.zeros(3, 10, 10, 10))
    img, _ = train.crop_patch(case, (0, 0, 0), (16, 16, 16))
    assert img.shape == (4, 16, 16, 16)
    assert float(img.sum()) == 4 * 10 * 10 * 10  # every voxel of the volume, the rest zero padding


def test_loss_and_metrics_on_perfect_prediction() -> None:
    target = torch.zeros(1, 3, 8, 8, 8)
    target[:, :, 2:6, 2:6, 2:6] = 1
    logits = (target * 2 - 1) * 20
    assert float(train.DiceBCELoss()(logits, target)) < 1e-3
    for fn in (train.dice_tc, train.dice_wt, train.dice_et):
        assert float(fn(logits, target)) == pytest.approx(1.0)
    assert float(train.dice_et(-logits, target)) == 0.0
    empty = torch.zeros_like(target)
    assert float(train.dice_wt(-20 * torch.ones_like(target), empty)) == 1.0  # both empty: a match


def test_build_unet_default_is_the_original_architecture() -> None:
    net = train.build_unet()
    n = sum(p.numel() for p in net.parameters())
    assert 4_000_000 < n < 6_000_000
    out = net(torch.zeros(1, 4, 32, 32, 32))
    assert out.shape == (1, 3, 32, 32, 32)
    assert any(isinstance(m, torch.nn.PReLU) for m in net.modules())
    assert np.isfinite(out.detach().numpy()).all()


def test_loaded_model_is_cached(tiny_model_dir: Path) -> None:
    a = load_model(tiny_model_dir, device="cpu")
    b = load_model(tiny_model_dir, device="cpu")
    assert a is b and len(a.networks) == 1


def test_seed_ensemble_on_the_same_split_bundles_and_records_scores(
    tiny_data_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A second run on the first run's folds (other seed, strong intensity augmentation), bundled into
    one model folder: both learners are loaded and averaged, and evaluate records its held-out scores
    in the bundled card."""
    from conftest import TINY_TRAIN_ARGS

    second = tmp_path / "seed1"
    args = ["train", str(tiny_data_dir), "--output", str(second), *TINY_TRAIN_ARGS]
    args[args.index("--fold") + 1] = "0"
    assert main([*args, "--seed", "1", "--splits", str(tiny_model_dir / "splits.json"), "--intensity-augment", "strong"]) == 0
    first_held = ModelCard.load(tiny_model_dir / "model.json").extra["training"]["held_out_cases"]
    assert ModelCard.load(tiny_model_dir / "model.json").extra["training"]["intensity_augment"] == "mild"
    assert ModelCard.load(second / "model.json").extra["training"]["intensity_augment"] == "strong"
    assert ModelCard.load(second / "model.json").extra["training"]["held_out_cases"] == first_held

    bundled = tmp_path / "model"
    assert main(["bundle", str(tiny_model_dir), str(second), "--output", str(bundled)]) == 0
    card = ModelCard.load(bundled / "model.json")
    assert card.files == ["run.pkl", "seed1.pkl"] and card.extra["held_out_cases"] == first_held
    model = load_model(bundled, device="cpu")
    assert len(model.networks) == 2

    out = tmp_path / "eval"
    code = main(["evaluate", str(tiny_data_dir), "--output", str(out), "--model", str(bundled),
                 "--cases", f"@{bundled / 'model.json'}", "--record-as", "held_out", "--no-progress"])
    assert code == 0
    scores = ModelCard.load(bundled / "model.json").extra["scores"]["held_out"]
    summary = json.loads((out / "summary.json").read_text())
    assert scores["cases"] == first_held == summary["cases"]
    assert scores["metrics"]["dice_WT"]["mean"] == pytest.approx(summary["summary"]["dice_WT"]["mean"], abs=1e-4)
    assert scores["command"].startswith("brats-seg evaluate") and "--record-as held_out" in scores["command"]
    # the pickles are untouched by recording scores
    assert load_model(bundled, device="cpu") is model
    for name in card.files:
        from brats_seg.model import sha256_of

        assert sha256_of(bundled / name) == card.sha256[name]


def _run_at_other_spacing(tiny_model_dir: Path, other: Path) -> Path:
    """A copy of the tiny run whose card says it reads inputs at 1 mm (the run's is 2 mm)."""
    import shutil

    shutil.copytree(tiny_model_dir, other)
    d = json.loads((other / "model.json").read_text())
    d["spacing"] = [1.0, 1.0, 1.0]
    (other / "model.json").write_text(json.dumps(d))
    return other


def test_bundle_refuses_runs_that_read_inputs_differently(tiny_model_dir: Path, tmp_path: Path) -> None:
    other = _run_at_other_spacing(tiny_model_dir, tmp_path / "other")
    assert main(["bundle", str(tiny_model_dir), str(other), "--output", str(tmp_path / "m")]) == 2
    with pytest.raises(Exception, match=r"its spacing \[1.0, 1.0, 1.0\] differs"):
        train.bundle([tiny_model_dir, other], tmp_path / "m2")


def test_bundle_writes_post_processing_settings_into_the_card(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "m"
    assert main(["bundle", str(tiny_model_dir), "--output", str(out),
                 "--min-component-mm3", "500", "--et-min-mm3", "200"]) == 0
    card = ModelCard.load(out / "model.json")
    assert card.postprocess == {"min_component_mm3": 500.0, "et_min_mm3": 200.0}
    assert load_model(out, device="cpu").card.postprocess == card.postprocess
    assert main(["bundle", str(tiny_model_dir), "--output", str(tmp_path / "n")]) == 0
    assert ModelCard.load(tmp_path / "n" / "model.json").postprocess == {}


def test_bundle_can_store_float16_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    """--weights-dtype float16 re-exports each learner with half-size weights; the run is untouched,
    the card says so, and the network's output barely moves."""
    from brats_seg.model import load_learner_checked, sha256_of

    run_card = ModelCard.load(tiny_model_dir / "model.json")
    out = tmp_path / "m16"
    assert main(["bundle", str(tiny_model_dir), "--output", str(out), "--weights-dtype", "float16"]) == 0
    card = ModelCard.load(out / "model.json")
    assert card.files == ["run.pkl"] and sha256_of(out / "run.pkl") == card.sha256["run.pkl"]
    assert card.extra["members"][0]["training"]["weights_dtype"] == "float16"
    assert card.extra["members"][0]["training"]["converted_from"] == {
        "file": str(tiny_model_dir / "model.pkl"), "sha256": run_card.sha256["model.pkl"]}
    assert run_card.extra["training"]["weights_dtype"] == "float32"
    assert sha256_of(tiny_model_dir / "model.pkl") == run_card.sha256["model.pkl"], "the run's learner must not change"
    learn = load_learner_checked(out / "run.pkl", card.sha256["run.pkl"])
    assert {p.dtype for p in learn.model.parameters()} == {torch.float16}
    assert (out / "run.pkl").stat().st_size < 0.75 * (tiny_model_dir / "model.pkl").stat().st_size

    x = torch.randn(1, 4, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = torch.sigmoid(load_model(tiny_model_dir, device="cpu").networks[0](x))
        half = torch.sigmoid(load_model(out, device="cpu").networks[0](x))
    assert float((full - half).abs().max()) < 1e-2


def test_bundle_refuses_an_unknown_weights_dtype_and_a_tampered_run(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    import shutil

    from brats_seg.errors import ModelError

    with pytest.raises(SystemExit):
        main(["bundle", str(tiny_model_dir), "--output", str(tmp_path / "m"), "--weights-dtype", "int8"])
    assert "invalid choice: 'int8'" in capsys.readouterr().err
    with pytest.raises(ModelError, match="expected weights_dtype in"):
        train.bundle([tiny_model_dir], tmp_path / "m", weights_dtype="bfloat8")
    # a changed or missing learner in any run is refused before anything is written
    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_model_dir, tampered)
    with open(tampered / "model.pkl", "ab") as f:
        f.write(b"x")
    missing = tmp_path / "missing"
    shutil.copytree(tiny_model_dir, missing)
    (missing / "model.pkl").unlink()
    for bad, message in ((tampered, "model.pkl to have sha256"), (missing, "model.pkl is missing")):
        for dtype in ([], ["--weights-dtype", "float16"]):
            out = tmp_path / f"out_{bad.name}_{len(dtype)}"
            assert main(["bundle", str(tiny_model_dir), str(bad), "--output", str(out), *dtype]) == 2
            err = capsys.readouterr().err
            assert f"cannot bundle {bad}" in err and message in err and "Traceback" not in err
            assert not out.exists()
    with pytest.raises(ModelError, match="with the same folder name"):
        train.bundle([tiny_model_dir, tiny_model_dir], tmp_path / "twice")


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--min-component-mm3", "-1"], "expected a number >= 0, found -1"),
        (["--et-min-mm3", "lots"], "expected a number >= 0, found 'lots'"),
        (["--min-component-fraction", "2"], r"expected a fraction in \[0, 1\], found 2"),
    ],
)
def test_bundle_refuses_bad_post_processing_settings(option: list[str], message: str, tiny_model_dir: Path,
                                                      tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bundle", str(tiny_model_dir), "--output", str(tmp_path / "m"), *option])
    assert exc.value.code == 2
    assert re.search(message, capsys.readouterr().err)


# ----------------------------------------------------------------------------------------------------
# Packs, data-loader workers, time budgets, float16 export, fine-tuning, cross-validation
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_pack(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pack = tmp_path_factory.mktemp("pack") / "tiny.npz"
    assert main(["pack", str(tiny_data_dir), "--output", str(pack), "--spacing", "2", "2", "2"]) == 0
    return pack


def test_pack_round_trip_matches_the_preprocessing(tiny_pack: Path, tiny_data_dir: Path) -> None:
    from brats_seg import files

    card = train._card_for(train.TrainConfig(), "t")
    cases = train.load_pack(tiny_pack, card)
    assert sorted(cases) == ["Tiny-003", "Tiny_001", "Tiny_002"]
    ref = train.preprocess_case(files.load_study(tiny_data_dir / "Tiny_001"), card)
    got = cases["Tiny_001"]
    assert got.image.shape == ref.image.shape and got.target.shape == ref.target.shape
    brain = (ref.image != 0).any(0)
    assert torch.equal((got.image != 0).any(0), brain), "the brain mask must survive packing exactly"
    for c in range(ref.image.shape[0]):
        v = ref.image[c][brain]
        half_step = float(v.max() - v.min()) / 254 / 2
        assert float((got.image[c][brain] - v).abs().max()) <= half_step + 1e-5
    assert float((got.target - ref.target).abs().max()) <= 1 / 254 + 1e-6
    assert torch.equal(got.target > 0.5, ref.target > 0.5), "no voxel may cross the 0.5 threshold"
    assert len(got.fg) == len(ref.fg) and len(got.brain) == len(ref.brain)


def test_load_pack_refuses_other_preprocessing_and_other_files(tiny_pack: Path, tmp_path: Path, capsys) -> None:
    card = train._card_for(train.TrainConfig(spacing=(1.5, 1.5, 1.5)), "t")
    with pytest.raises(ValueError, match=r"packed with spacing \[2.0, 2.0, 2.0\], but training asks for \[1.5, 1.5, 1.5\]"):
        train.load_pack(tiny_pack, card)
    bogus = tmp_path / "bogus.npz"
    bogus.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="expected a training pack written by brats-seg pack"):
        train.load_pack(bogus, card)
    code = main(["train", str(bogus), "--output", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "bogus.npz: expected a training pack" in err and "Traceback" not in err


def test_pack_command_refuses_bad_paths(tiny_data_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["pack", str(tmp_path / "nothing"), "--output", str(tmp_path / "p.npz")]) == 2
    assert "expected a folder of cases, found no such folder" in capsys.readouterr().err
    assert main(["pack", str(tiny_data_dir), "--output", str(tmp_path / "p.zip")]) == 2
    assert "expected a file name ending in .npz" in capsys.readouterr().err


def test_patch_dataset_workers_draw_different_patches() -> None:
    """Forked workers start with copies of one random state; each must reseed or they repeat each other."""
    image = torch.randn(4, 40, 40, 40)
    case = train.make_case("c", image, torch.zeros(3, 40, 40, 40))
    ds = train.PatchDataset([case], patch_size=(8, 8, 8), length=8, augment=False, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    first, second = (batch[0] for batch in loader)  # batch 0 from worker 0, batch 1 from worker 1
    assert not torch.equal(first, second)


def test_samples_for_budget_fits_the_epochs_into_the_budget() -> None:
    config = train.TrainConfig(epochs=4, batch_size=2, time_budget_minutes=1.0)
    # 60 s x 0.85 x 10 batches/s / 4 epochs = 127.5 -> 127 batches of 2
    assert train.samples_for_budget(config, 10.0) == 254
    assert train.samples_for_budget(config, 0.001) == 2  # at least one batch


def test_train_from_pack_with_workers_time_budget_and_float16_export(
    tiny_pack: Path, tiny_study_dir: Path, tmp_path: Path
) -> None:
    from conftest import TINY_TRAIN_ARGS

    from brats_seg.model import load_learner_checked

    out = tmp_path / "run"
    args = ["train", str(tiny_pack), "--output", str(out), *TINY_TRAIN_ARGS,
            "--num-workers", "1", "--time-budget", "0.05", "--export-dtype", "float16"]
    assert main(args) == 0
    card = ModelCard.load(out / "model.json")
    training = card.extra["training"]
    assert training["weights_dtype"] == "float16" and training["time_budget_minutes"] == 0.05
    assert "tiny.npz by brats-seg pack" in training["data"]
    meta = json.loads((out / "train_meta.json").read_text())
    assert meta["measured_batches_per_second"] > 0
    assert training["iterations"] == 2 * (meta["samples_per_epoch"] // 2)
    budget = train.TrainConfig(epochs=2, batch_size=2, time_budget_minutes=0.05)
    assert meta["samples_per_epoch"] == train.samples_for_budget(budget, meta["measured_batches_per_second"])
    assert meta["batches_per_epoch"] == meta["samples_per_epoch"] // 2, "the loader must really run the budgeted length"
    learn = load_learner_checked(out / "model.pkl", card.sha256["model.pkl"])
    assert {p.dtype for p in learn.model.parameters()} == {torch.float16}
    model = load_model(out, device="cpu")
    assert {p.dtype for p in model.networks[0].parameters()} == {torch.float32}
    assert main(["predict", str(tiny_study_dir), "--output", str(tmp_path / "pred"), "--model", str(out), "--no-progress"]) == 0


def test_init_from_fine_tunes_a_trained_model(tiny_data_dir: Path, tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    from conftest import TINY_TRAIN_ARGS

    out = tmp_path / "ft"
    assert main(["train", str(tiny_data_dir), "--output", str(out), *TINY_TRAIN_ARGS, "--init-from", str(tiny_model_dir)]) == 0
    init = ModelCard.load(out / "model.json").extra["training"]["init_from"]
    assert init["sha256"] == ModelCard.load(tiny_model_dir / "model.json").sha256["model.pkl"]
    assert init["training"]["epochs"] == 2
    fresh = train.build_unet(channels=(4, 8, 16), num_res_units=1)
    train.init_weights(fresh, tiny_model_dir)
    source = load_model(tiny_model_dir, device="cpu").networks[0].state_dict()
    assert all(torch.equal(v, source[k]) for k, v in fresh.state_dict().items())

    # a source that trained on this run's held-out cases would leak them into its scores
    leaky = ["train", str(tiny_data_dir), "--output", str(tmp_path / "leak"), *TINY_TRAIN_ARGS,
             "--splits", str(tiny_model_dir / "splits.json"), "--init-from", str(tiny_model_dir)]
    leaky[leaky.index("--fold") + 1] = "1"
    assert main(leaky) == 2
    assert "which this run holds out" in capsys.readouterr().err

    args = ["train", str(tiny_data_dir), "--output", str(tmp_path / "bad"), *TINY_TRAIN_ARGS, "--init-from", str(tiny_model_dir)]
    args[args.index("--channels") + 1: args.index("--channels") + 4] = ["8", "8", "16"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "its network differs from the one being trained" in err and "Traceback" not in err


def _train_fold(tiny_data_dir: Path, tiny_model_dir: Path, out: Path, fold: int) -> Path:
    """A tiny run of ``fold`` on the split of ``tiny_model_dir`` (whose own run holds out fold 0)."""
    from conftest import TINY_TRAIN_ARGS

    args = ["train", str(tiny_data_dir), "--output", str(out), *TINY_TRAIN_ARGS, "--splits", str(tiny_model_dir / "splits.json")]
    args[args.index("--fold") + 1] = str(fold)
    assert main(args) == 0
    return out


def test_init_from_a_bundle_of_fold_models_takes_the_member_of_the_same_fold(
    tiny_data_dir: Path, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    """--init-from model/ (a bundle of fold models) starts each fold from its own member, never from a
    member that trained on the run's held-out cases; a bundle with no member of the fold is refused."""
    from conftest import TINY_TRAIN_ARGS

    splits = tiny_model_dir / "splits.json"
    fold1 = _train_fold(tiny_data_dir, tiny_model_dir, tmp_path / "fold1", 1)
    bundled = tmp_path / "model"
    assert main(["bundle", str(tiny_model_dir), str(fold1), "--output", str(bundled)]) == 0

    ft = tmp_path / "ft1"
    args = ["train", str(tiny_data_dir), "--output", str(ft), *TINY_TRAIN_ARGS, "--splits", str(splits), "--init-from", str(bundled)]
    args[args.index("--fold") + 1] = "1"
    assert main(args) == 0
    init = ModelCard.load(ft / "model.json").extra["training"]["init_from"]
    assert init["file"] == str(bundled / "fold1.pkl")
    assert init["sha256"] == ModelCard.load(fold1 / "model.json").sha256["model.pkl"]
    fresh = train.build_unet(channels=(4, 8, 16), num_res_units=1)
    held_out = ModelCard.load(fold1 / "model.json").extra["training"]["held_out_cases"]
    train.init_weights(fresh, bundled, held_out=held_out)
    source = load_model(fold1, device="cpu").networks[0].state_dict()
    assert all(torch.equal(v, source[k]) for k, v in fresh.state_dict().items())

    args[args.index("--fold") + 1] = "2"  # no member holds out fold 2
    args[args.index("--output") + 1] = str(tmp_path / "ft2")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"--init-from {bundled}: expected a bundle member that holds out exactly" in err
    assert "found none among its 2 members (run.pkl: [" in err and "Traceback" not in err


def test_average_writes_the_mean_of_one_folds_runs_as_a_run(
    tiny_data_dir: Path, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    """brats-seg average: the float32 mean of the weights of runs that hold out the same cases (a bundle
    contributes its member of that fold), exported as a run folder that loads, predicts and bundles."""
    from conftest import TINY_TRAIN_ARGS

    from brats_seg.model import load_learner_checked, sha256_of

    splits = tiny_model_dir / "splits.json"
    second = tmp_path / "seed1"
    args = ["train", str(tiny_data_dir), "--output", str(second), *TINY_TRAIN_ARGS, "--splits", str(splits),
            "--seed", "1", "--init-from", str(tiny_model_dir), "--lr", "3e-2", "--export-dtype", "float16"]
    assert main(args) == 0
    fold1 = _train_fold(tiny_data_dir, tiny_model_dir, tmp_path / "fold1", 1)
    bundled = tmp_path / "model"
    assert main(["bundle", str(fold1), str(second), "--output", str(bundled)]) == 0  # members of folds 1 and 0

    soup = tmp_path / "soup"
    capsys.readouterr()
    assert main(["average", str(tiny_model_dir), str(bundled), "--output", str(soup)]) == 0
    assert f"wrote {soup / 'model.pkl'}: the mean of 2 learners" in capsys.readouterr().out
    card = ModelCard.load(soup / "model.json")
    first = ModelCard.load(tiny_model_dir / "model.json")
    assert card.files == ["model.pkl"] and card.sha256["model.pkl"] == sha256_of(soup / "model.pkl")
    training = card.extra["training"]
    assert training["held_out_cases"] == first.extra["training"]["held_out_cases"]
    assert [s["file"] for s in training["averaged_from"]] == [str(tiny_model_dir / "model.pkl"), str(bundled / "seed1.pkl")]
    assert training["averaged_from"][1]["sha256"] == ModelCard.load(second / "model.json").sha256["model.pkl"]
    assert training["weights_dtype"] == "float32" and card.extra["scores"] == {}

    a = load_model(tiny_model_dir, device="cpu").networks[0].state_dict()
    b = load_model(second, device="cpu").networks[0].state_dict()
    mean = load_learner_checked(soup / "model.pkl", card.sha256["model.pkl"]).model.state_dict()
    weights = [k for k in a if a[k].is_floating_point()]
    assert any(not torch.allclose(a[k], b[k]) for k in weights), "the fine-tune must have moved the weights"
    for k in weights:
        assert torch.allclose(mean[k], (a[k] + b[k].float()) / 2, atol=1e-6), k
    assert main(["bundle", str(soup), "--output", str(tmp_path / "souped")]) == 0
    assert len(load_model(tmp_path / "souped", device="cpu").networks) == 1


def test_average_refuses_other_folds_bundles_first_and_tampered_learners(
    tiny_data_dir: Path, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    import shutil

    fold1 = _train_fold(tiny_data_dir, tiny_model_dir, tmp_path / "fold1", 1)
    capsys.readouterr()
    assert main(["average", str(tiny_model_dir), str(fold1), "--output", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert f"cannot average {fold1}: it holds out [" in err and "only runs of the same fold can be averaged" in err
    assert not (tmp_path / "x" / "model.pkl").exists()

    assert main(["average", str(tiny_model_dir), "--output", str(tmp_path / "x")]) == 2
    assert "expected at least two model folders, found 1" in capsys.readouterr().err

    bundled = tmp_path / "model"
    assert main(["bundle", str(tiny_model_dir), "--output", str(bundled)]) == 0
    assert main(["average", str(bundled), str(tiny_model_dir), "--output", str(tmp_path / "x")]) == 2
    assert "expected a run folder first (one learner), found a bundle" in capsys.readouterr().err

    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_model_dir, tampered)
    with open(tampered / "model.pkl", "ab") as f:
        f.write(b"x")
    assert main(["average", str(tiny_model_dir), str(tampered), "--output", str(tmp_path / "x")]) == 2
    assert "refusing to unpickle" in capsys.readouterr().err

    leaky = tmp_path / "leaky"
    shutil.copytree(tiny_model_dir, leaky)
    d = json.loads((leaky / "model.json").read_text())
    held = d["training"]["held_out_cases"]
    d["training"]["train_cases"] = [*d["training"]["train_cases"], held[0]]
    (leaky / "model.json").write_text(json.dumps(d))
    assert main(["average", str(tiny_model_dir), str(leaky), "--output", str(tmp_path / "x")]) == 2
    assert f"cannot average {leaky}: it was trained on ['{held[0]}'], which {tiny_model_dir} holds out" in capsys.readouterr().err

    other = _run_at_other_spacing(tiny_model_dir, tmp_path / "other")
    assert main(["average", str(tiny_model_dir), str(other), "--output", str(tmp_path / "x")]) == 2
    assert f"cannot average {other}: its spacing [1.0, 1.0, 1.0] differs" in capsys.readouterr().err


def test_cross_validation_scores_each_case_with_the_members_that_held_it_out(
    tiny_data_dir: Path, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:

    splits = tiny_model_dir / "splits.json"
    second = _train_fold(tiny_data_dir, tiny_model_dir, tmp_path / "fold1", 1)
    bundled = tmp_path / "model"
    assert main(["bundle", str(tiny_model_dir), str(second), "--output", str(bundled)]) == 0
    folds = json.loads(splits.read_text())["folds"]
    out = tmp_path / "cv"
    capsys.readouterr()
    assert main(["evaluate", str(tiny_data_dir), "--output", str(out), "--model", str(bundled), "--cross-validation",
                 "--record-as", "cross_validation", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cross_validation"] is True
    assert summary["postprocessing"] is True and summary["tta"] is False  # how they were made, for tune_postprocess
    assert sorted(summary["cases"]) == sorted(folds[0] + folds[1])  # fold 2 was never held out by a member
    scores = ModelCard.load(bundled / "model.json").extra["scores"]["cross_validation"]
    assert scores["n"] == 2 and "--cross-validation" in scores["command"]

    # each case's prediction is the one its own fold model makes, not the ensemble's
    from brats_seg import files
    from brats_seg.pipeline import segment

    case = folds[1][0]
    alone = segment(files.load_study(tiny_data_dir / case), load_model(second, device="cpu"))
    assert main(["evaluate", str(tiny_data_dir), "--output", str(tmp_path / "cv2"), "--model", str(bundled),
                 "--cross-validation", "--cases", case, "--save-predictions", "--no-progress"]) == 0
    import nibabel as nib

    saved = np.asanyarray(nib.load(tmp_path / "cv2" / f"{case}_seg.nii.gz").dataobj)
    assert np.array_equal(saved, alone.labels.array)

    assert main(["evaluate", str(tiny_data_dir), "--output", str(tmp_path / "cv3"), "--model", str(bundled),
                 "--cross-validation", "--cases", folds[2][0], "--no-progress"]) == 2
    assert "no member of" in capsys.readouterr().err
    # the card's held-out cases are the ones every member held out: none here, and the message says what to do
    assert main(["evaluate", str(tiny_data_dir), "--output", str(tmp_path / "cv4"), "--model", str(bundled),
                 "--cases", f"@{bundled / 'model.json'}", "--no-progress"]) == 2
    assert "a bundle of fold models): use --cross-validation" in capsys.readouterr().err


def test_train_folds_script_trains_every_fold_with_its_own_inputs(
    tiny_pack: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """scripts/train_folds.sh: one process per fold of the split, {fold} replaced in the options."""
    import os
    import subprocess
    import sys

    from conftest import TINY_TRAIN_ARGS

    args = list(TINY_TRAIN_ARGS)
    for option in ("--folds", "--fold"):
        i = args.index(option)
        del args[i:i + 2]
    script = Path(__file__).resolve().parents[1] / "scripts" / "train_folds.sh"
    out = tmp_path / "folds"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        ["bash", str(script), str(tiny_pack), str(out), str(tiny_model_dir / "splits.json"), *args,
         "--seed", "1{fold}"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr + "".join((out / f"fold{f}.log").read_text() for f in range(3))
    folds = json.loads((tiny_model_dir / "splits.json").read_text())["folds"]
    for f in range(3):
        training = ModelCard.load(out / f"fold{f}" / "model.json").extra["training"]
        assert training["fold"] == f and training["held_out_cases"] == folds[f]
        assert json.loads((out / f"fold{f}" / "train_meta.json").read_text())["config"]["seed"] == 10 + f


def test_train_folds_script_reports_a_failing_fold(tiny_model_dir: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "train_folds.sh"
    result = subprocess.run(
        ["bash", str(script), str(tmp_path / "missing.npz"), str(tmp_path / "out"), str(tiny_model_dir / "splits.json")],
        env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1
    assert "fold 0 failed" in result.stderr and "missing.npz" in result.stderr


def test_device_script_dry_run_fine_tunes_each_fold_from_the_bundled_member(
    tiny_pack: Path, tiny_data_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """scripts/device_train_folds.sh, run here without a GPU or wheels: INIT=<bundle> starts each fold from
    the bundle's member of that fold, AUG and EXTRA reach brats-seg train, BUDGET=none keeps the epoch
    length, and every fold's learner comes back in OUT."""
    import os
    import subprocess
    import sys

    members = [tiny_model_dir] + [_train_fold(tiny_data_dir, tiny_model_dir, tmp_path / f"fold{f}", f) for f in (1, 2)]
    bundled = tmp_path / "model"
    assert main(["bundle", *map(str, members), "--output", str(bundled)]) == 0
    out, runs = tmp_path / "out", tmp_path / "runs"
    out.mkdir()
    env = {**os.environ, "OUT": str(out), "RUNS": str(runs), "PY": sys.executable, "WHEELS": "none",
           "PACK": str(tiny_pack), "SPLITS": str(tiny_model_dir / "splits.json"), "SPACING": "2 2 2",
           "PATCH": "16 16 16", "BATCH": "2", "EPOCHS": "1", "BUDGET": "none", "WORKERS": "0", "AUG": "strong-bias",
           "LR": "3e-3", "INIT": str(bundled),
           "EXTRA": "--channels 4 8 16 --num-res-units 1 --samples-per-epoch 4 --val-patches 1 --device cpu"}
    script = Path(__file__).resolve().parents[1] / "scripts" / "device_train_folds.sh"
    result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "train_folds exit 0" in result.stdout
    card = ModelCard.load(bundled / "model.json")
    for f in range(3):
        assert (out / f"fold{f}.pkl").is_file()
        training = ModelCard.load(runs / f"fold{f}" / "model.json").extra["training"]
        assert training["intensity_augment"] == "strong-bias" and training["iterations"] == 2
        assert training["init_from"]["file"] == str(bundled / card.files[f])  # run.pkl, fold1.pkl, fold2.pkl


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--fold": "5"}, r"--fold 5: expected -1 \(all cases\) or a fold below 3"),
        ({"--epochs": "0"}, "--epochs: expected at least 1, found 0"),
        ({"--splits": "missing.json"}, r"--splits .*missing.json: expected a splits.json with a 'folds' list"),
        ({"--init-from": "nowhere"}, "--init-from nowhere: expected a run or model folder with a model.json"),
        ({"--precision": "fp16"}, "--precision fp16: float16 mixed precision needs a GPU, but training runs on cpu"),
    ],
)
def test_train_refuses_bad_settings_before_training(change: dict[str, str], message: str, tiny_data_dir: Path,
                                                    tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    from conftest import TINY_TRAIN_ARGS

    args = ["train", str(tiny_data_dir), "--output", str(tmp_path / "run"), *TINY_TRAIN_ARGS,
            "--splits", str(tiny_model_dir / "splits.json")]
    for option, value in change.items():
        value = str(tmp_path / value) if option == "--splits" else value
        if option in args:
            args[args.index(option) + 1] = value
        else:
            args += [option, value]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err
    assert not (tmp_path / "run" / "model.pkl").exists()


@pytest.mark.parametrize("budget", ["0", "-1", "soon"])
def test_time_budget_must_be_positive(budget: str, tiny_data_dir: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", str(tiny_data_dir), "--output", str(tmp_path / "run"), "--time-budget", budget])
    assert exc.value.code == 2
    assert f"expected a positive number, found '{budget}'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("precision", "device", "bf16_supported", "expected"),  # bf16_supported: compute capability 9.0 or 7.0
    [
        ("auto", "cpu", True, "fp32"),
        ("fp32", "cpu", True, "fp32"),
        ("auto", "cuda", True, "bf16"),  # bfloat16 has float32's range: float16 overflowed at 96-voxel patches
        ("auto", "cuda", False, "fp16"),
        ("fp16", "cuda", True, "fp16"),
        ("fp32", "cuda", True, "fp32"),
    ],
)
def test_precision_auto_prefers_bfloat16_on_a_gpu(precision: str, device: str, bf16_supported: bool, expected: str,
                                                  monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (9, 0) if bf16_supported else (7, 0))
    assert train.resolve_precision(precision, torch.device(device)) == expected


@pytest.mark.parametrize("native", [True, False])
def test_bfloat16_on_the_cpu_only_where_it_is_native(native: bool, monkeypatch) -> None:
    monkeypatch.setattr(train, "cpu_bf16_supported", lambda: native)
    if native:
        assert train.resolve_precision("bf16", torch.device("cpu")) == "bf16"
    else:
        with pytest.raises(train.StudyError, match=r"--precision bf16: this CPU has no native bfloat16 .*use fp32 or auto"):
            train.resolve_precision("bf16", torch.device("cpu"))
    assert train.resolve_precision("auto", torch.device("cpu")) == "fp32"  # the recipe of the bundled model


@pytest.mark.skipif(not train.cpu_bf16_supported(), reason="this CPU has no native bfloat16 (AVX512-BF16 or AMX)")
def test_cpu_bfloat16_channels_last_training_exports_a_standard_float32_learner(tiny_data_dir: Path, tiny_model_dir: Path,
                                                                               tmp_path: Path) -> None:
    from conftest import TINY_TRAIN_ARGS

    out = tmp_path / "bf16"
    assert main(["train", str(tiny_data_dir), "--output", str(out), *TINY_TRAIN_ARGS, "--precision", "bf16",
                 "--splits", str(tiny_model_dir / "splits.json")]) == 0
    card = ModelCard.load(out / "model.json")
    assert card.extra["training"]["precision"] == "bf16" and card.extra["training"]["channels_last"] is True
    assert card.extra["training"]["trained_on"][0].startswith("CPU (") and ", bf16," in card.extra["training"]["trained_on"][0]
    history = list(csv.DictReader((out / "history.csv").open()))
    assert len(history) == 2 and all(np.isfinite(float(r["train_loss"])) for r in history)
    model = load_model(out, device="cpu")
    for p in model.networks[0].parameters():
        assert p.dtype == torch.float32 and p.is_contiguous()  # standard layout, float32 again
    from brats_seg.model import load_learner_checked

    learner = load_learner_checked(out / "model.pkl", card.sha256["model.pkl"])
    assert not {type(cb).__name__ for cb in learner.cbs} & {"CPUAutocast", "ChannelsLast3d"}  # not pickled
    assert main(["predict", str(tiny_data_dir / "Tiny_001"), "--model", str(out), "--output", str(tmp_path / "pred"),
                 "--no-progress"]) == 0


def test_channels_last_changes_layout_not_results() -> None:
    """One training step in channels_last_3d gives the same loss and gradients as in the standard layout."""
    torch.manual_seed(0)
    net = train.build_unet(channels=(4, 8, 16), num_res_units=1)
    x, y = torch.randn(2, 4, 16, 16, 16), (torch.rand(2, 3, 16, 16, 16) > 0.5).float()
    loss_fn = train.DiceBCELoss()
    grads = []
    for layout in (torch.contiguous_format, torch.channels_last_3d):
        net.zero_grad()
        net.to(memory_format=layout)
        loss = loss_fn(net(x.to(memory_format=layout)), y)
        loss.backward()
        grads.append((float(loss), [p.grad.clone() for p in net.parameters()]))
    assert grads[0][0] == pytest.approx(grads[1][0], abs=1e-5)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(grads[0][1], grads[1][1], strict=True))
    assert train.ChannelsLast3d.order < train.CPUAutocast.order  # the layout is set before autocast enters


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(train.StudyError, match=r"--precision: expected one of \('auto', 'bf16', 'fp16', 'fp32'\), found 'half'"):
        train.resolve_precision("half", torch.device("cpu"))
    with pytest.raises(train.StudyError, match="--precision: expected one of .*, found 'half'"):
        train.check_config(train.TrainConfig(precision="half"))


def test_resumed_fit_flat_cos_follows_the_uninterrupted_schedule() -> None:
    from fastai.callback.core import Callback
    from fastai.test_utils import synth_learner

    class LrLog(Callback):
        def before_fit(self) -> None:
            self.lrs: list[tuple[int, float]] = []

        def after_batch(self) -> None:
            if self.training:
                self.lrs.append((self.epoch, self.opt.hypers[0]["lr"]))

    whole, resumed = LrLog(), LrLog()
    train.fit_flat_cos(synth_learner(n_trn=32, cbs=[whole]), 4, lr=1e-2, pct_start=0.5)
    train.fit_flat_cos(synth_learner(n_trn=32, cbs=[resumed]), 4, lr=1e-2, pct_start=0.5, start_epoch=3)
    assert {e for e, _ in resumed.lrs} == {3}  # epochs 0-2 skipped
    last_epoch = [lr for e, lr in whole.lrs if e == 3]
    assert [lr for _, lr in resumed.lrs] == pytest.approx(last_epoch)
    assert max(last_epoch) < 0.6e-2  # annealing (half-way at 75 %), not the flat 1e-2 of a restarted schedule


def test_bundle_can_turn_test_time_flips_on_by_default(tiny_data_dir: Path, tiny_model_dir: Path, tmp_path: Path,
                                                       capsys) -> None:
    """--tta-flips sets the card default; evaluate then flips unless told --no-tta, and says which it did."""
    plain, flipped = tmp_path / "plain", tmp_path / "flipped"
    assert main(["bundle", str(tiny_model_dir), "--output", str(plain)]) == 0
    assert main(["bundle", str(tiny_model_dir), "--output", str(flipped), "--tta-flips"]) == 0
    assert ModelCard.load(plain / "model.json").tta_flips is False
    card = ModelCard.load(flipped / "model.json")
    assert card.tta_flips is True and card.sha256 == ModelCard.load(plain / "model.json").sha256
    made = {}
    for flag in ([], ["--no-tta"]):
        out = tmp_path / f"eval{len(flag)}"
        assert main(["evaluate", str(tiny_data_dir), "--output", str(out), "--model", str(flipped), "--cross-validation",
                     "--no-progress", *flag]) == 0
        made[tuple(flag)] = json.loads((out / "summary.json").read_text())
    assert made[()]["tta"] is True and made[("--no-tta",)]["tta"] is False
    assert made[()]["summary"] != made[("--no-tta",)]["summary"]  # the flips change the prediction

    # a record's key says whether flips were used, so the dashboard's line cannot misstate it
    base = ["evaluate", str(tiny_data_dir), "--output", str(tmp_path / "rec"), "--model", str(flipped),
            "--cross-validation", "--no-progress"]
    assert main([*base, "--record-as", "cross_validation"]) == 2
    assert ("--record-as cross_validation: these predictions use test-time flips (the card says so); expected a key "
            "ending in _tta (e.g. cross_validation_tta)") in capsys.readouterr().err
    assert main([*base, "--no-tta", "--record-as", "cross_validation_tta"]) == 2
    assert "these predictions skip test-time flips (--tta/--no-tta says so)" in capsys.readouterr().err
    assert main([*base, "--record-as", "cross_validation_tta"]) == 0
    assert main([*base, "--no-tta", "--record-as", "cross_validation"]) == 0
    assert sorted(ModelCard.load(flipped / "model.json").extra["scores"]) == ["cross_validation", "cross_validation_tta"]


def test_channels_last_is_the_cpu_default_and_recorded(tiny_data_dir: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    from conftest import TINY_TRAIN_ARGS

    assert ModelCard.load(tiny_model_dir / "model.json").extra["training"]["channels_last"] is True  # trained on the CPU
    out = tmp_path / "standard"
    assert main(["train", str(tiny_data_dir), "--output", str(out), *TINY_TRAIN_ARGS, "--no-channels-last",
                 "--splits", str(tiny_model_dir / "splits.json")]) == 0
    assert ModelCard.load(out / "model.json").extra["training"]["channels_last"] is False
