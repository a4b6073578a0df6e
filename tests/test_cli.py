"""Tests for the ``brats-seg`` command line: predict, evaluate, info, help texts and exit codes."""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
import statistics
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import brats_affine, write_nifti, write_tiny_study

from brats_seg import cli
from brats_seg.cli import main
from brats_seg.cli.evaluate import format_summary
from brats_seg.files import find_studies, load_study
from brats_seg.types import MODALITIES


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """Run ``brats-seg ARGS`` in this process; returns (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def predict(
    capsys, model_dir: Path, out: Path, *inputs: Path, extra: tuple[str, ...] = ()
) -> tuple[int, str, str]:
    return run(capsys, "predict", *inputs, "--output", out, "--model", model_dir, "--no-progress", *extra)


def check_prediction(out: Path, name: str, files: dict[str, Path]) -> dict:
    """Check ``<name>_seg.nii.gz`` and ``<name>_report.json`` against the input files; return the report."""
    source = nib.load(files["T1"])
    seg = nib.load(out / f"{name}_seg.nii.gz")
    assert seg.shape == source.shape
    assert np.allclose(seg.affine, source.affine)
    assert int(seg.header["sform_code"]) == int(source.header["sform_code"])
    assert int(seg.header["qform_code"]) == int(source.header["qform_code"])
    assert np.allclose(seg.header.get_sform(), source.header.get_sform())
    assert np.allclose(seg.header.get_qform(), source.header.get_qform())
    labels = np.asarray(seg.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2, 4}

    report = json.loads((out / f"{name}_report.json").read_text())
    assert report["study"] == name
    voxel_mm3 = float(np.prod(source.header.get_zooms()[:3]))
    counts = {value: int(np.count_nonzero(labels == value)) for value in (1, 2, 4)}
    for label, value in {"NCR": 1, "ED": 2, "ET": 4}.items():
        entry = report["volumes"]["labels"][label]
        assert entry["voxels"] == counts[value]
        assert entry["mm3"] == pytest.approx(counts[value] * voxel_mm3)
        assert entry["mL"] == pytest.approx(counts[value] * voxel_mm3 / 1000)
    for region, values in {"ET": (4,), "TC": (1, 4), "WT": (1, 2, 4)}.items():
        assert report["volumes"]["regions"][region]["mm3"] == pytest.approx(
            sum(counts[v] for v in values) * voxel_mm3
        )
    for modality, path in files.items():
        entry = report["inputs"][modality]
        assert entry["file"] == path.name
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert report["shape"] == list(source.shape)
    assert report["spacing_mm"] == pytest.approx([float(z) for z in source.header.get_zooms()[:3]])
    return report


def assert_bad_input(code: int, err: str, *fragments: str) -> None:
    """Exit 2 with a one-line message naming what is wrong, and no traceback."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0]


# --------------------------------------------------------------------------------------------------
# predict
# --------------------------------------------------------------------------------------------------


def test_predict_study_folder_with_anisotropic_voxels(
    tiny_study, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    shape = (32, 32, 24)
    files = tiny_study(name="Aniso_001", shape=shape, affine=brats_affine(shape, (1.0, 1.0, 2.0)))
    code, out, err = predict(capsys, tiny_model_dir, tmp_path / "out", files["T1"].parent)
    assert code == 0, err
    assert "Aniso_001" in out
    report = check_prediction(tmp_path / "out", "Aniso_001", files)
    assert report["spacing_mm"] == [1.0, 1.0, 2.0]
    assert report["volumes"]["regions"]["WT"]["voxels"] > 0  # the volumes are not vacuous
    assert set(report["scores"]) == {"ET", "TC", "WT"}  # a ground truth was there
    card = json.loads((tiny_model_dir / "model.json").read_text())
    assert report["model"]["files"] == card["sha256"]
    assert report["settings"]["roi_size"] == card["roi_size"]
    assert "not for clinical use" in report["intended_use"]


def test_predict_writes_the_uncertain_map_and_the_range_on_request(
    tiny_study, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    from brats_seg import report

    shape = (32, 32, 24)
    files = tiny_study(name="Hes_001", shape=shape, affine=brats_affine(shape, (1.0, 1.0, 2.0)))
    code, out, err = predict(
        capsys, tiny_model_dir, tmp_path / "out", files["T1"].parent, extra=("--uncertain-map",)
    )
    assert code == 0, err
    rep = check_prediction(tmp_path / "out", "Hes_001", files)
    strict, loose = rep["volume_range"]["regions"]["WT"]
    assert rep["volume_range"]["thresholds"] == list(report.VOLUME_RANGE_THRESHOLDS)
    assert strict <= rep["volumes"]["regions"]["WT"]["mL"] <= loose
    assert (
        f"{strict:.1f}\u2013{loose:.1f} mL at thresholds 0.7\u20130.3" in out
    )  # the printed line states the range
    source, uncertain = nib.load(files["T1"]), nib.load(tmp_path / "out" / "Hes_001_uncertain.nii.gz")
    assert uncertain.shape == source.shape and np.allclose(uncertain.affine, source.affine)
    mask = np.asarray(uncertain.dataobj)
    assert set(np.unique(mask).tolist()) <= {0, 1} and mask.any()
    assert b"uncertain 0/1" in uncertain.header["descrip"].tobytes() and uncertain.header["cal_max"] == 1
    # at 1 x 1 x 2 mm, the uncertain voxels hold at least what the whole tumour gains from 0.7 to 0.3
    assert mask.sum() * 2.0 / 1000 + 1e-6 >= loose - strict
    # the help states the thresholds the pipeline uses
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    thresholds = " and ".join(f"{t:g}" for t in report.VOLUME_RANGE_THRESHOLDS)
    assert f"decision thresholds {thresholds} " in " ".join(capsys.readouterr().out.split())
    # without the flag, no map
    code, _, err = predict(capsys, tiny_model_dir, tmp_path / "plain", files["T1"].parent)
    assert code == 0, err
    assert not (tmp_path / "plain" / "Hes_001_uncertain.nii.gz").exists()


def test_predict_zip(tiny_study, tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    files = tiny_study(name="Zipped_001", seg=False)
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in files.values():
            zf.write(path, f"Zipped_001/{path.name}")
    code, _, err = predict(capsys, tiny_model_dir, tmp_path / "out", archive)
    assert code == 0, err
    report = check_prediction(tmp_path / "out", "Zipped_001", files)
    assert "scores" not in report


def test_predict_four_files(tiny_study, tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    files = tiny_study(name="Files_007", seg=True)
    four = {m: files[m] for m in MODALITIES}
    code, _, err = predict(capsys, tiny_model_dir, tmp_path / "out", *four.values())
    assert code == 0, err
    check_prediction(tmp_path / "out", "Files_007", four)
    code, _, err = predict(
        capsys, tiny_model_dir, tmp_path / "named", *four.values(), extra=("--name", "Renamed")
    )
    assert code == 0, err
    check_prediction(tmp_path / "named", "Renamed", four)


def test_predict_folder_of_studies(tiny_data_dir: Path, tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    code, out, err = predict(capsys, tiny_model_dir, tmp_path / "out", tiny_data_dir)
    assert code == 0, err
    folders = find_studies(tiny_data_dir)
    assert len(folders) == 3
    for folder in folders:
        study = load_study(folder)
        files = {m: folder / study.sources[m] for m in study.sources}
        check_prediction(tmp_path / "out", study.name, files)
    assert len(list((tmp_path / "out").glob("*_seg.nii.gz"))) == 3


def test_predict_folder_with_a_bad_study_writes_the_others_and_exits_2(
    tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    data = tmp_path / "data"
    write_tiny_study(data / "Good_001", "Good_001", seg=False)
    bad = write_tiny_study(data / "Bad_002", "Bad_002", seg=False)
    bad["FLAIR"].unlink()
    code, out, err = predict(capsys, tiny_model_dir, tmp_path / "out", data)
    assert code == 2
    assert (tmp_path / "out" / "Good_001_seg.nii.gz").is_file()
    assert not (tmp_path / "out" / "Bad_002_seg.nii.gz").exists()
    assert "skipping" in err and "missing FLAIR" in err and "1 of 2 studies skipped" in err
    assert "Traceback" not in err


def test_check_names_refused_and_warned_studies_without_a_model(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    write_tiny_study(data / "Good_001", "Good_001", seg=False)  # 32 x 32 x 24 mm: far smaller than a brain
    bad = write_tiny_study(data / "Bad_002", "Bad_002", seg=False)
    bad["FLAIR"].unlink()
    code, out, err = run(capsys, "check", data)
    assert code == 2, err
    lines = out.splitlines()
    assert lines[0].startswith(f"{data / 'Bad_002'}: refused: ") and "missing FLAIR" in lines[0]
    assert lines[1].startswith(
        "Good_001: 1 warning (32 x 32 x 24 voxels of 1 x 1 x 1 mm; T1 Good_001_t1.nii.gz, "
    )
    assert lines[2].startswith("  warning: Good_001: the non-zero region measures 8 mL")
    assert lines[-1] == "2 studies: 0 ok, 1 with warnings, 1 refused"
    assert "Traceback" not in err
    shutil.rmtree(data / "Bad_002")
    code, out, _ = run(capsys, "check", data / "Good_001")
    assert code == 0 and out.splitlines()[-1] == "1 study: 0 ok, 1 with warnings, 0 refused"


def test_check_and_batch_predict_print_each_refusal_on_one_line(
    tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    data = tmp_path / "data"
    write_tiny_study(data / "Good_001", "Good_001", seg=False)
    bad = write_tiny_study(data / "Moved_002", "Moved_002", seg=False)
    image = nib.load(bad["FLAIR"])
    moved = image.affine.copy()
    moved[:3, 3] += 50.0  # the message shows both affines as matrices
    write_nifti(bad["FLAIR"], np.asarray(image.dataobj), moved)
    code, out, _ = run(capsys, "check", data, "--harmonise", "off")
    assert code == 2
    refused = [line for line in out.splitlines() if ": refused: " in line]
    assert len(refused) == 1 and "Moved_002_flair.nii.gz: affine differs" in refused[0]
    assert len(out.splitlines()) == 4  # refused, Good_001 and its warning, the summary
    code, _, err = predict(capsys, tiny_model_dir, tmp_path / "out", data, extra=("--harmonise", "off"))
    assert code == 2
    skipped = [line for line in err.splitlines() if line.startswith("skipping")]
    assert len(skipped) == 1 and "affine differs" in skipped[0] and skipped[0].rstrip().endswith("]]")


def test_a_batch_mapping_applies_to_the_studies_that_have_its_files(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    write_tiny_study(data / "Case_001", "Case_001", seg=False)
    odd = write_tiny_study(data / "Case_002", "Case_002", seg=False)
    odd["T2"].rename(odd["T2"].with_name("scan7.nii.gz"))  # a name nothing can tell
    code, out, _ = run(capsys, "check", data, "--map", "scan7.nii.gz=T2")
    assert code == 0, out
    assert out.splitlines()[-1] == "2 studies: 0 ok, 2 with warnings, 0 refused"
    assert "T2 scan7.nii.gz" in out
    # one study: a key that names none of its files is still a mistake worth refusing
    code, _, err = run(
        capsys, "predict", data / "Case_001", "--output", tmp_path / "out", "--map", "scan7.nii.gz=T2"
    )
    assert code == 2 and "scan7.nii.gz: named in the mapping but not among the study's files" in err


def test_several_folders_and_zips_are_a_batch(tmp_path: Path, capsys) -> None:
    a = write_tiny_study(tmp_path / "A" / "Case_001", "Case_001", seg=False)["T1"].parent
    b = write_tiny_study(tmp_path / "B" / "Case_002", "Case_002", seg=False)["T1"].parent
    archive = tmp_path / "Case_003.zip"
    c = write_tiny_study(tmp_path / "C" / "Case_003", "Case_003", seg=False)
    with zipfile.ZipFile(archive, "w") as z:
        for path in c.values():
            z.write(path, path.name)
    code, out, _ = run(capsys, "check", a, tmp_path / "B", archive)
    assert code == 0, out
    assert [line.split(":")[0] for line in out.splitlines() if not line.startswith(" ")][:3] == [
        "Case_001",
        "Case_002",
        "Case_003",
    ]
    assert out.splitlines()[-1] == "3 studies: 0 ok, 3 with warnings, 0 refused"
    assert b.is_dir()


def test_check_a_real_study(brats_case: Path, capsys) -> None:
    code, out, err = run(capsys, "check", brats_case)
    assert code == 0, err
    assert out.splitlines() == [
        f"{brats_case.name}: ok (240 x 240 x 155 voxels of 1 x 1 x 1 mm; T1 {brats_case.name}_t1.nii.gz, "
        f"T1CE {brats_case.name}_t1ce.nii.gz, T2 {brats_case.name}_t2.nii.gz, "
        f"FLAIR {brats_case.name}_flair.nii.gz, SEG {brats_case.name}_seg.nii.gz)",
        "1 study: 1 ok, 0 with warnings, 0 refused",
    ]


# --------------------------------------------------------------------------------------------------
# Help texts
# --------------------------------------------------------------------------------------------------


def option_blocks(help_text: str, parser: argparse.ArgumentParser) -> dict[str, str]:
    """The help text of each optional argument, keyed by its first option string."""
    lines = help_text.splitlines()
    starts = {}
    for i, line in enumerate(lines):
        stripped = line.strip()
        for action in parser._actions:
            if action.option_strings and any(
                stripped == opt or stripped.startswith(f"{opt} ") or stripped.startswith(f"{opt},")
                for opt in action.option_strings
            ):
                starts.setdefault(action.option_strings[0], i)
    order = sorted(starts.items(), key=lambda kv: kv[1])
    blocks = {}
    for k, (opt, i) in enumerate(order):
        end = order[k + 1][1] if k + 1 < len(order) else len(lines)
        blocks[opt] = " ".join(line.strip() for line in lines[i:end])
    return blocks


@pytest.mark.parametrize("command", ["predict", "evaluate", "train", "bundle", "info"])
def test_help_states_every_default(command: str, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    subparsers = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = subparsers.choices[command]
    blocks = option_blocks(help_text, parser)
    options = [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]
    assert options
    for action in options:
        block = blocks[action.option_strings[0]]
        if action.required:
            assert "default" not in block, block  # no "(default: None)" on a required option
        else:
            assert "default" in block, f"{command} {action.option_strings[0]}: no default stated in {block!r}"
        assert "(default: None)" not in block and block.count("(default") <= 1, block


# --------------------------------------------------------------------------------------------------
# Exit codes
# --------------------------------------------------------------------------------------------------


def test_bad_input_exits_2_with_one_line(tiny_study, tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    # a path that does not exist
    code, _, err = predict(capsys, tiny_model_dir, out, tmp_path / "nowhere")
    assert_bad_input(code, err, "brats-seg predict: error:", "nowhere", "no such file or folder")
    # a missing modality
    files = tiny_study(name="NoFlair_001", seg=False)
    files["FLAIR"].unlink()
    code, _, err = predict(capsys, tiny_model_dir, out, files["T1"].parent)
    assert_bad_input(code, err, "NoFlair_001", "missing FLAIR")
    # a corrupt gzip
    files = tiny_study(name="Corrupt_001", seg=False)
    raw = files["T2"].read_bytes()
    files["T2"].write_bytes(raw[:40] + bytes(len(raw) - 40))
    code, _, err = predict(capsys, tiny_model_dir, out, files["T1"].parent)
    assert_bad_input(code, err, "Corrupt_001_t2.nii.gz", "gzip")
    # files on different grids (the message holds both affines: still one line)
    files = tiny_study(name="Shifted_001", seg=False)
    image = nib.load(files["T2"])
    shifted = image.affine.copy()
    shifted[2, 3] += 3
    write_nifti(files["T2"], np.asarray(image.dataobj), shifted)
    code, _, err = predict(capsys, tiny_model_dir, out, files["T1"].parent, extra=("--harmonise", "off"))
    assert_bad_input(code, err, "Shifted_001_t2.nii.gz", "affine differs from that of Shifted_001_t1.nii.gz")
    # a single file
    code, _, err = predict(capsys, tiny_model_dir, out, files["T1"])
    assert_bad_input(code, err, "Shifted_001_t1.nii.gz", "expected a study folder")
    assert not out.exists() or not any(out.iterdir())


def test_bad_model_folder_exits_2(tiny_study_dir: Path, tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = predict(capsys, tmp_path / "empty", tmp_path / "out", tiny_study_dir)
    assert_bad_input(code, err, str(tmp_path / "empty" / "model.json"), "no model card")
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    shutil.copy(tiny_model_dir / "model.pkl", tampered / "model.pkl")
    card = json.loads((tiny_model_dir / "model.json").read_text())
    card["sha256"]["model.pkl"] = "f" * 64
    (tampered / "model.json").write_text(json.dumps(card))
    code, _, err = predict(capsys, tampered, tmp_path / "out", tiny_study_dir)
    assert_bad_input(code, err, "refusing to unpickle", "model.pkl", "f" * 64)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            ["--device", "quantum"],
            "argument --device: expected a torch device such as cpu, cuda or cuda:0, found 'quantum'",
        ),
        (["--overlap", "1.5"], "argument --overlap: expected a fraction in [0, 1), found '1.5'"),
        (["--overlap", "half"], "argument --overlap: expected a fraction in [0, 1), found 'half'"),
        (["--roi-size", "16", "0", "16"], "argument --roi-size: expected a whole number >= 1, found '0'"),
        (["--sw-batch-size", "-2"], "argument --sw-batch-size: expected a whole number >= 1, found '-2'"),
    ],
)
def test_bad_option_values_exit_2(
    option: list[str], message: str, tiny_study_dir: Path, tmp_path: Path, capsys
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(tiny_study_dir), "-o", str(tmp_path), *option])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_device_without_a_gpu_exits_2(tiny_study_dir: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(tiny_study_dir), "-o", str(tmp_path), "--device", "cuda"])
    assert exit_info.value.code == 2
    assert "no CUDA GPU is available" in capsys.readouterr().err


def test_output_that_is_a_file_exits_2(
    tiny_study_dir: Path, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    (tmp_path / "taken").write_text("")
    code, _, err = predict(capsys, tiny_model_dir, tmp_path / "taken", tiny_study_dir)
    assert_bad_input(code, err, "taken", "cannot create the output folder")


def test_internal_error_exits_1_with_traceback(
    tiny_study_dir: Path, tiny_model_dir: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from brats_seg import pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(pipeline, "segment", broken)
    code, _, err = predict(capsys, tiny_model_dir, tmp_path / "out", tiny_study_dir)
    assert code == 1
    assert "Traceback" in err
    assert (
        err.strip().splitlines()[-1] == "brats-seg predict: internal error: RuntimeError: simulated failure"
    )


# --------------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------------

METRIC_COLUMNS = [f"{m}_{r}" for r in ("ET", "TC", "WT", "NCR", "ED") for m in ("dice", "hd95")]


def read_scores(folder: Path) -> list[dict[str, str]]:
    with open(folder / "scores.csv", newline="") as f:
        return list(csv.DictReader(f))


def check_summary(folder: Path, rows: list[dict[str, str]]) -> dict:
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["cases"] == [r["case"] for r in rows]
    for column in METRIC_COLUMNS:
        values = [float(r[column]) for r in rows]
        stats = summary["summary"][column]
        assert stats["mean"] == pytest.approx(statistics.fmean(values), abs=1e-9)
        assert stats["median"] == pytest.approx(statistics.median(values), abs=1e-9)
        assert stats["std"] == pytest.approx(statistics.pstdev(values), abs=1e-9)
        assert stats["n"] == len(values)
        assert min(values) <= stats["ci_low"] <= stats["mean"] + 1e-9 and stats["mean"] - 1e-9 <= stats[
            "ci_high"
        ] <= max(values)
    return summary


def test_evaluate_predicts_and_scores_every_case(
    tiny_data_dir: Path, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "eval"
    code, stdout, err = run(
        capsys,
        "evaluate",
        tiny_data_dir,
        "-o",
        out,
        "--model",
        tiny_model_dir,
        "--no-progress",
        "--save-predictions",
    )
    assert code == 0, err
    rows = read_scores(out)
    assert [r["case"] for r in rows] == sorted(f.name for f in tiny_data_dir.iterdir())
    assert set(METRIC_COLUMNS) <= set(rows[0])
    summary = check_summary(out, rows)
    assert summary["model"] == json.loads((tiny_model_dir / "model.json").read_text())["name"]
    assert "dice_WT" in stdout and "median" in stdout and "95% CI of the mean" in stdout
    wt = summary["summary"]["dice_WT"]
    assert (
        f"{wt['ci_low']:.3f}\u2013{wt['ci_high']:.3f}" in stdout
    )  # the printed interval is the recorded one
    assert len(list(out.glob("*_seg.nii.gz"))) == 3

    # reading the saved predictions back gives the same scores, without loading a model
    again = tmp_path / "again"
    code, _, err = run(capsys, "evaluate", tiny_data_dir, "-o", again, "--predictions", out, "--no-progress")
    assert code == 0, err
    reread = read_scores(again)
    for a, b in zip(rows, reread, strict=True):
        assert a["case"] == b["case"]
        for column in METRIC_COLUMNS:
            assert float(a[column]) == pytest.approx(float(b[column]))


def test_summary_table_gives_no_interval_for_a_single_case() -> None:
    from brats_seg.metrics import summarise

    one = format_summary(summarise([{"dice_WT": 0.8}]))
    assert one.splitlines()[1].split()[:3] == [
        "dice_WT",
        "0.800",
        "-",
    ]  # one case cannot show how far a mean moves
    two = format_summary(summarise([{"dice_WT": 0.8}, {"dice_WT": 0.6}]))
    assert "0.600\u20130.800" in two.splitlines()[1]


def perfect_predictions(data_dir: Path, dest: Path) -> Path:
    """Copy each case's ground truth as ``<case>_seg.nii.gz`` into ``dest``."""
    dest.mkdir()
    for folder in find_studies(data_dir):
        study = load_study(folder)
        shutil.copy(folder / study.sources["SEG"], dest / f"{study.name}_seg.nii.gz")
    return dest


def test_evaluate_reads_existing_predictions_instead_of_predicting(
    tiny_data_dir: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import brats_seg.model

    def no_model(*args, **kwargs):
        raise AssertionError("evaluate --predictions must not load a model")

    monkeypatch.setattr(brats_seg.model, "load_model", no_model)
    preds = perfect_predictions(tiny_data_dir, tmp_path / "preds")
    code, _, err = run(
        capsys, "evaluate", tiny_data_dir, "-o", tmp_path / "out", "--predictions", preds, "--no-progress"
    )
    assert code == 0, err
    rows = read_scores(tmp_path / "out")
    assert len(rows) == 3
    for row in rows:
        for region in ("ET", "TC", "WT"):
            assert float(row[f"dice_{region}"]) == 1.0 and float(row[f"hd95_{region}"]) == 0.0
    summary = check_summary(tmp_path / "out", rows)
    assert summary["model"] is None


def test_evaluate_refuses_bad_predictions(tiny_data_dir: Path, tmp_path: Path, capsys) -> None:
    preds = perfect_predictions(tiny_data_dir, tmp_path / "preds")
    args = [
        "evaluate",
        tiny_data_dir,
        "-o",
        tmp_path / "out",
        "--predictions",
        preds,
        "--no-progress",
        "--cases",
        "Tiny_002",
    ]
    target = preds / "Tiny_002_seg.nii.gz"
    reference = nib.load(target)
    truth = np.asarray(reference.dataobj)

    bad = truth.copy()
    bad[0, 0, 0] = 3
    write_nifti(target, bad, reference.affine)
    code, _, err = run(capsys, *args)
    assert_bad_input(code, err, "Tiny_002_seg.nii.gz", "unexpected value(s) 3 in 1 voxel(s)")

    write_nifti(target, truth[:, :, :-1], reference.affine)
    code, _, err = run(capsys, *args)
    assert_bad_input(
        code,
        err,
        "Tiny_002_seg.nii.gz",
        f"expected the shape {truth.shape}",
        f"found {truth[:, :, :-1].shape}",
    )

    shifted = reference.affine.copy()
    shifted[0, 3] += 5
    write_nifti(target, truth, shifted)
    code, _, err = run(capsys, *args)
    assert_bad_input(code, err, "Tiny_002_seg.nii.gz", "affine differs", "by up to 5 mm")

    target.write_bytes(b"\x1f\x8b" + bytes(100))
    code, _, err = run(capsys, *args)
    assert_bad_input(code, err, "Tiny_002_seg.nii.gz", "cannot be read as a NIfTI label map")

    target.unlink()
    code, _, err = run(capsys, *args)
    assert_bad_input(code, err, "Tiny_002_seg.nii.gz", "no prediction for case Tiny_002")

    code, _, err = run(
        capsys, "evaluate", tiny_data_dir, "-o", tmp_path / "out", "--predictions", tmp_path / "none"
    )
    assert_bad_input(code, err, "--predictions", "no such folder")


def test_evaluate_case_selection(tiny_data_dir: Path, tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    preds = perfect_predictions(tiny_data_dir, tmp_path / "preds")

    def cases(spec: str) -> list[str]:
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        code, _, err = run(
            capsys,
            "evaluate",
            tiny_data_dir,
            "-o",
            out,
            "--predictions",
            preds,
            "--no-progress",
            "--cases",
            spec,
        )
        assert code == 0, err
        return [r["case"] for r in read_scores(out)]

    assert cases("Tiny_002, Tiny-003") == ["Tiny-003", "Tiny_002"]
    listing = tmp_path / "cases.txt"
    listing.write_text("Tiny_001\n\nTiny-003\n")
    assert cases(f"@{listing}") == ["Tiny-003", "Tiny_001"]
    held_out = json.loads((tiny_model_dir / "model.json").read_text())["training"]["held_out_cases"]
    assert cases(f"@{tiny_model_dir / 'model.json'}") == sorted(held_out)

    code, _, err = run(
        capsys,
        "evaluate",
        tiny_data_dir,
        "-o",
        tmp_path / "x",
        "--predictions",
        preds,
        "--cases",
        "Tiny_001,Nobody",
    )
    assert_bad_input(code, err, "no case with ground truth named ['Nobody']")
    code, _, err = run(
        capsys, "evaluate", tiny_data_dir, "-o", tmp_path / "x", "--cases", f"@{tmp_path / 'absent.txt'}"
    )
    assert_bad_input(code, err, "absent.txt", "no such file")
    (tmp_path / "broken.json").write_text("{")
    code, _, err = run(
        capsys, "evaluate", tiny_data_dir, "-o", tmp_path / "x", "--cases", f"@{tmp_path / 'broken.json'}"
    )
    assert_bad_input(code, err, "broken.json is not valid JSON")
    for members in ("junk", ["junk"], [{"training": "junk"}], [{"training": {"held_out_cases": []}}]):
        (tmp_path / "odd.json").write_text(json.dumps({"members": members, "held_out_cases": []}))
        code, _, err = run(
            capsys, "evaluate", tiny_data_dir, "-o", tmp_path / "x", "--cases", f"@{tmp_path / 'odd.json'}"
        )
        assert_bad_input(code, err, "found no held-out cases")
        assert "--cross-validation" not in err


def test_evaluate_missing_data_dir_exits_2(tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "evaluate", tmp_path / "nowhere", "-o", tmp_path / "out")
    assert_bad_input(code, err, "nowhere", "no such folder")


def test_info_prints_the_card(tiny_model_dir: Path, capsys) -> None:
    code, out, _ = run(capsys, "info", "--model", tiny_model_dir)
    assert code == 0
    assert json.loads(out) == json.loads((tiny_model_dir / "model.json").read_text())


# --------------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------------


@pytest.mark.data
def test_predict_real_case_end_to_end(brats_case: Path, tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    args = [
        "predict",
        str(brats_case),
        "--output",
        str(tmp_path / "out"),
        "--model",
        str(tiny_model_dir),
        "--no-progress",
    ]
    start = time.perf_counter()
    code, out, err = run(capsys, *args)
    seconds = time.perf_counter() - start
    assert code == 0, err
    study = load_study(brats_case, load_truth=False)
    files = {m: brats_case / study.sources[m] for m in MODALITIES}
    report = check_prediction(tmp_path / "out", brats_case.name, files)
    assert report["shape"] == [240, 240, 155]
    with capsys.disabled():
        print(
            f"\n[timing] brats-seg {' '.join(args)}: {seconds:.1f} s wall in-process, one torch thread "
            f"(steps in seconds: {report['timings_s']})"
        )
