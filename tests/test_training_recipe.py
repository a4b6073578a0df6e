"""The training recipe end to end on tiny generated data: train, export, load, predict, resume
(brats_seg.training.recipe)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from brats_seg.card import ModelCard
from brats_seg.cli import main
from brats_seg.model import load_model, pickle_modules
from brats_seg.training.devices import cpu_bf16_supported


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
    assert {"brats_seg.training.network", "brats_seg.training.data"} <= modules  # loss, metrics, datasets
    assert any(m.startswith("monai.") for m in modules) and any(m.startswith("fastai.") for m in modules)


def test_predict_uses_the_trained_learner(tiny_model_dir: Path, tiny_study_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                str(tiny_study_dir),
                "--output",
                str(out),
                "--model",
                str(tiny_model_dir),
                "--no-progress",
            ]
        )
        == 0
    )
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
    assert len(trained_on) == 2 and trained_on[0].startswith("CPU")
    assert trained_on[0].endswith("fp32, from epoch 1")
    assert trained_on[1].endswith("fp32, from epoch 3")  # each session of a resumed run is recorded


def test_resume_with_other_network_settings_is_refused(tiny_data_dir: Path, tmp_path: Path, capsys) -> None:
    from conftest import TINY_TRAIN_ARGS

    out = tmp_path / "run"
    args = ["train", str(tiny_data_dir), "--output", str(out), *TINY_TRAIN_ARGS]
    assert main(args) == 0
    channels = args.index("--channels")
    args[channels + 1 : channels + 4] = ["8", "16", "32"]
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    checkpoint = out / "models" / "last.pth"
    assert f"{checkpoint}: cannot resume from this checkpoint, it does not fit the network" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            "garbage",
            r"cannot resume from this checkpoint, it does not fit the network asked for .* "
            r"or is damaged \(\w+",
        ),
        ("missing", "expected the checkpoint that last.json beside it describes, found none"),
    ],
)
def test_resume_from_a_damaged_or_missing_checkpoint_is_refused_and_changes_nothing(
    damage: str, message: str, tiny_data_dir: Path, tmp_path: Path, capsys
) -> None:
    from conftest import TINY_TRAIN_ARGS

    out = tmp_path / "run"
    args = ["train", str(tiny_data_dir), "--output", str(out), *TINY_TRAIN_ARGS]
    assert main(args) == 0
    checkpoint = out / "models" / "last.pth"
    if damage == "garbage":
        checkpoint.write_bytes(b"\x80\x04not a checkpoint" * 10)
    else:
        checkpoint.unlink()
    before = {
        p: p.read_bytes()
        for p in [out / "history.csv", out / "train_meta.json", out / "models" / "last.json"]
    }
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
    state.write_text(
        json.dumps({"epoch": 0, "n_epoch": 2})
    )  # as if killed between epoch 1's log row and its checkpoint
    assert main([*args, "--resume"]) == 0
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1"]


def test_loaded_model_is_cached(tiny_model_dir: Path) -> None:
    a = load_model(tiny_model_dir, device="cpu")
    b = load_model(tiny_model_dir, device="cpu")
    assert a is b and len(a.networks) == 1


def train_fold(tiny_data_dir: Path, tiny_model_dir: Path, out: Path, fold: int) -> Path:
    """A tiny run of ``fold`` on the split of ``tiny_model_dir`` (whose own run holds out fold 0)."""
    from conftest import TINY_TRAIN_ARGS

    args = [
        "train",
        str(tiny_data_dir),
        "--output",
        str(out),
        *TINY_TRAIN_ARGS,
        "--splits",
        str(tiny_model_dir / "splits.json"),
    ]
    args[args.index("--fold") + 1] = str(fold)
    assert main(args) == 0
    return out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--fold": "5"}, r"--fold 5: expected -1 \(all cases\) or a fold below 3"),
        ({"--epochs": "0"}, "--epochs: expected at least 1, found 0"),
        (
            {"--splits": "missing.json"},
            r"--splits .*missing.json: expected a splits.json with a 'folds' list",
        ),
        ({"--init-from": "nowhere"}, "--init-from nowhere: expected a run or model folder with a model.json"),
        (
            {"--precision": "fp16"},
            "--precision fp16: float16 mixed precision needs a GPU, but training runs on cpu",
        ),
    ],
)
def test_train_refuses_bad_settings_before_training(
    change: dict[str, str], message: str, tiny_data_dir: Path, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    from conftest import TINY_TRAIN_ARGS

    args = [
        "train",
        str(tiny_data_dir),
        "--output",
        str(tmp_path / "run"),
        *TINY_TRAIN_ARGS,
        "--splits",
        str(tiny_model_dir / "splits.json"),
    ]
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


@pytest.mark.skipif(not cpu_bf16_supported(), reason="this CPU has no native bfloat16 (AVX512-BF16 or AMX)")
def test_cpu_bfloat16_channels_last_training_exports_a_standard_float32_learner(
    tiny_data_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from conftest import TINY_TRAIN_ARGS

    out = tmp_path / "bf16"
    assert (
        main(
            [
                "train",
                str(tiny_data_dir),
                "--output",
                str(out),
                *TINY_TRAIN_ARGS,
                "--precision",
                "bf16",
                "--splits",
                str(tiny_model_dir / "splits.json"),
            ]
        )
        == 0
    )
    card = ModelCard.load(out / "model.json")
    assert card.extra["training"]["precision"] == "bf16" and card.extra["training"]["channels_last"] is True
    session = card.extra["training"]["trained_on"][0]
    assert session.startswith("CPU (") and ", bf16," in session
    history = list(csv.DictReader((out / "history.csv").open()))
    assert len(history) == 2 and all(np.isfinite(float(r["train_loss"])) for r in history)
    model = load_model(out, device="cpu")
    for p in model.networks[0].parameters():
        assert p.dtype == torch.float32 and p.is_contiguous()  # standard layout, float32 again
    from brats_seg.model import load_learner_checked

    learner = load_learner_checked(out / "model.pkl", card.sha256["model.pkl"])
    assert not {type(cb).__name__ for cb in learner.cbs} & {"CPUAutocast", "ChannelsLast3d"}  # not pickled
    assert (
        main(
            [
                "predict",
                str(tiny_data_dir / "Tiny_001"),
                "--model",
                str(out),
                "--output",
                str(tmp_path / "pred"),
                "--no-progress",
            ]
        )
        == 0
    )


def test_channels_last_is_the_cpu_default_and_recorded(
    tiny_data_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from conftest import TINY_TRAIN_ARGS

    # trained on the CPU
    assert ModelCard.load(tiny_model_dir / "model.json").extra["training"]["channels_last"] is True
    out = tmp_path / "standard"
    assert (
        main(
            [
                "train",
                str(tiny_data_dir),
                "--output",
                str(out),
                *TINY_TRAIN_ARGS,
                "--no-channels-last",
                "--splits",
                str(tiny_model_dir / "splits.json"),
            ]
        )
        == 0
    )
    assert ModelCard.load(out / "model.json").extra["training"]["channels_last"] is False
