"""``brats-seg batch``: input/, output/ and log/ folders, as a container run that something else triggers."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_tiny_study

from brats_seg.cli import main

SHAPE = (32, 32, 24)


def test_batch_segments_each_study_and_logs_one_line_each(
    tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    inp, out, log = tmp_path / "input", tmp_path / "output", tmp_path / "log"
    for i, name in enumerate(("Tiny_001", "Tiny_002")):
        write_tiny_study(inp / name, name=name, shape=SHAPE, seed=i, seg=False)
    broken = write_tiny_study(inp / "Broken_003", name="Broken_003", shape=SHAPE, seg=False)
    broken["FLAIR"].unlink()
    argv = ["batch", "--input", str(inp), "--output", str(out), "--log", str(log)]
    argv += ["--model", str(tiny_model_dir), "--device", "cpu"]
    assert main(argv) == 2
    for name in ("Tiny_001", "Tiny_002"):
        assert (out / name / f"{name}_seg.nii.gz").exists() and (out / name / f"{name}_report.json").exists()
    assert not (out / "Broken_003").exists()
    (log_file,) = log.iterdir()
    assert log_file.name.startswith("brats-seg_batch_") and log_file.suffix == ".log"
    lines = log_file.read_text().splitlines()
    studies = [line.split(" ", 1)[1] for line in lines[1:-1]]
    assert [s.split(":")[0] for s in studies] == ["Broken_003", "Tiny_001", "Tiny_002"], lines
    assert "Broken_003: failed:" in studies[0] and "FLAIR" in studies[0], studies[0]
    assert all(": processed in" in s for s in studies[1:])
    assert lines[-1].endswith("batch done: 2 processed, 1 failed")
    assert "Tiny_001: processed" in capsys.readouterr().out
    # without the broken study: exit 0, and a second log file (one per run)
    for path in broken.values():
        path.unlink(missing_ok=True)
    broken["T1"].parent.rmdir()
    assert main(argv) == 0
    assert len(list(log.iterdir())) == 2


def test_batch_of_an_empty_input_says_so(tmp_path: Path, capsys) -> None:
    (tmp_path / "input").mkdir()
    argv = [
        "batch",
        "--input",
        str(tmp_path / "input"),
        "--output",
        str(tmp_path / "o"),
        "--log",
        str(tmp_path / "l"),
    ]
    assert main(argv) == 2
    assert "input: expected study folders, .zip files or one study, found none" in capsys.readouterr().err
    assert main([*argv[:2], str(tmp_path / "none"), *argv[3:]]) == 2
    assert "none: expected a folder of studies, found no folder" in capsys.readouterr().err


def test_batch_help_states_every_default(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from test_cli import option_blocks

    from brats_seg import cli

    monkeypatch.setenv("COLUMNS", "100")
    top = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = top.choices["batch"]
    with pytest.raises(SystemExit):
        main(["batch", "--help"])
    blocks = option_blocks(capsys.readouterr().out, parser)
    for action in parser._actions:
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            assert ("default" in blocks[action.option_strings[0]]) != action.required
