"""Training packs: packing, loading, refusing, training from one (brats_seg.training.pack)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from brats_seg.card import ModelCard
from brats_seg.cli import main
from brats_seg.model import load_model
from brats_seg.training.config import TrainConfig, card_for
from brats_seg.training.data import preprocess_case
from brats_seg.training.pack import load_pack
from brats_seg.training.schedule import samples_for_budget


@pytest.fixture(scope="module")
def tiny_pack(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pack = tmp_path_factory.mktemp("pack") / "tiny.npz"
    assert main(["pack", str(tiny_data_dir), "--output", str(pack), "--spacing", "2", "2", "2"]) == 0
    return pack


def test_pack_round_trip_matches_the_preprocessing(tiny_pack: Path, tiny_data_dir: Path) -> None:
    from brats_seg.files import load_study

    card = card_for(TrainConfig(), "t")
    cases = load_pack(tiny_pack, card)
    assert sorted(cases) == ["Tiny-003", "Tiny_001", "Tiny_002"]
    ref = preprocess_case(load_study(tiny_data_dir / "Tiny_001"), card)
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


def test_load_pack_refuses_other_preprocessing_and_other_files(
    tiny_pack: Path, tmp_path: Path, capsys
) -> None:
    card = card_for(TrainConfig(spacing=(1.5, 1.5, 1.5)), "t")
    with pytest.raises(
        ValueError,
        match=r"packed with spacing \[2.0, 2.0, 2.0\], "
        r"but training asks for \[1.5, 1.5, 1.5\]",
    ):
        load_pack(tiny_pack, card)
    bogus = tmp_path / "bogus.npz"
    bogus.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="expected a training pack written by brats-seg pack"):
        load_pack(bogus, card)
    code = main(["train", str(bogus), "--output", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "bogus.npz: expected a training pack" in err and "Traceback" not in err


def test_pack_command_refuses_bad_paths(tiny_data_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["pack", str(tmp_path / "nothing"), "--output", str(tmp_path / "p.npz")]) == 2
    assert "expected a folder of cases, found no such folder" in capsys.readouterr().err
    assert main(["pack", str(tiny_data_dir), "--output", str(tmp_path / "p.zip")]) == 2
    assert "expected a file name ending in .npz" in capsys.readouterr().err


def test_train_from_pack_with_workers_time_budget_and_float16_export(
    tiny_pack: Path, tiny_study_dir: Path, tmp_path: Path
) -> None:
    from conftest import TINY_TRAIN_ARGS

    from brats_seg.model import load_learner_checked

    out = tmp_path / "run"
    args = [
        "train",
        str(tiny_pack),
        "--output",
        str(out),
        *TINY_TRAIN_ARGS,
        "--num-workers",
        "1",
        "--time-budget",
        "0.05",
        "--export-dtype",
        "float16",
    ]
    assert main(args) == 0
    card = ModelCard.load(out / "model.json")
    training = card.extra["training"]
    assert training["weights_dtype"] == "float16" and training["time_budget_minutes"] == 0.05
    assert "tiny.npz by brats-seg pack" in training["data"]
    meta = json.loads((out / "train_meta.json").read_text())
    assert meta["measured_batches_per_second"] > 0
    assert training["iterations"] == 2 * (meta["samples_per_epoch"] // 2)
    budget = TrainConfig(epochs=2, batch_size=2, time_budget_minutes=0.05)
    assert meta["samples_per_epoch"] == samples_for_budget(budget, meta["measured_batches_per_second"])
    budgeted = meta["batches_per_epoch"] == meta["samples_per_epoch"] // 2
    assert budgeted, "the loader must really run the budgeted length"
    learn = load_learner_checked(out / "model.pkl", card.sha256["model.pkl"])
    assert {p.dtype for p in learn.model.parameters()} == {torch.float16}
    model = load_model(out, device="cpu")
    assert {p.dtype for p in model.networks[0].parameters()} == {torch.float32}
    assert (
        main(
            [
                "predict",
                str(tiny_study_dir),
                "--output",
                str(tmp_path / "pred"),
                "--model",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
