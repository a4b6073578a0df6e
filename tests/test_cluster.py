"""Studies as tasks on a Dask cluster (``--workers``, ``--scheduler``): the same files as a run without
one, a failed study reported without stopping the others, re-runs that skip complete studies, and options
and addresses refused with a clear message."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import write_tiny_study

from brats_seg.cli import main
from brats_seg.cli.predict import predict_study

SHAPE = (32, 32, 24)
GOOD = [f"Tiny_00{i}" for i in range(1, 6)]
ROOT = Path(__file__).resolve().parents[1]
needs_dask = pytest.mark.skipif(
    importlib.util.find_spec("distributed") is None,
    reason="dask.distributed is not installed (pip install -r requirements.txt installs it)",
)


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """Run ``brats-seg ARGS`` in this process; returns (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def six_studies(tmp_path: Path) -> Path:
    """Five tiny studies and one whose T2 file is cut short (a truncated gzip)."""
    data = tmp_path / "data"
    for i, name in enumerate(GOOD):
        write_tiny_study(data / name, name, shape=SHAPE, seed=i, seg=False)
    broken = write_tiny_study(data / "Broken_006", "Broken_006", shape=SHAPE, seed=9, seg=False)
    raw = broken["T2"].read_bytes()
    broken["T2"].write_bytes(raw[: len(raw) // 2])
    return data


def study_lines(out: str) -> list[str]:
    """The per-study progress lines of a cluster run: ``[2 done, ..., 3 left] name: status: ...``."""
    return [line for line in out.splitlines() if line.startswith("[")]


@needs_dask
def test_predict_on_two_local_workers_matches_the_sequential_run(
    six_studies: Path, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    common = ("--model", tiny_model_dir, "--no-progress")
    code, _, err = run(capsys, "predict", six_studies, "-o", tmp_path / "seq", *common)
    assert code == 2 and "1 of 6 studies skipped" in err, err
    started = time.perf_counter()
    code, out, err = run(capsys, "predict", six_studies, "-o", tmp_path / "dask", *common, "--workers", "2")
    seconds = time.perf_counter() - started
    assert code == 2, out + err
    lines = study_lines(out)
    assert len(lines) == 6, out
    assert lines[-1].startswith("[") and lines[-1].split("]")[0].endswith("0 left")
    (failed,) = [line for line in lines if ": failed: " in line]
    assert f"{six_studies / 'Broken_006'}: failed: " in failed and "Broken_006_t2.nii.gz" in failed, failed
    assert sorted(line.split("] ")[1].split(":")[0] for line in lines if "_seg.nii.gz (WT " in line) == GOOD
    closing = out.splitlines()[-1]
    assert closing.startswith("6 studies: 5 done, 0 skipped, 1 failed (") and "on 2 local workers" in closing
    loads = re.search(r"model loads per worker: ([\d, ]+)\)$", closing)
    assert loads and set(loads.group(1).split(", ")) == {"1"}, closing  # each worker loaded it once
    assert "Traceback" not in err
    for name in GOOD:
        for suffix in ("_seg.nii.gz", "_uncertain.nii.gz"):
            if not (tmp_path / "seq" / f"{name}{suffix}").exists():
                continue
            seq, par = (nib.load(tmp_path / run / f"{name}{suffix}") for run in ("seq", "dask"))
            assert np.asarray(seq.dataobj).tobytes() == np.asarray(par.dataobj).tobytes()
            assert seq.affine.tobytes() == par.affine.tobytes()
    assert not list((tmp_path / "dask").glob("Broken_006*")) and not list((tmp_path / "dask").glob(".*"))
    print(f"2 local workers, 6 tiny studies: {seconds:.1f} s")


@needs_dask
def test_a_rerun_skips_complete_studies_and_retries_the_failed_one(
    six_studies: Path, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    argv = ("predict", six_studies, "-o", tmp_path / "out", "--model", tiny_model_dir, "--workers", "2")
    assert run(capsys, *argv)[0] == 2
    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    assert len(written) == 10  # labels and report of each good study
    code, out, err = run(capsys, *argv)
    assert code == 2, out + err
    lines = study_lines(out)
    skipped = [line for line in lines if ": skipped: complete (" in line]
    assert len(skipped) == 5 and all("_report.json)" in line for line in skipped), out
    assert (
        [line for line in lines if ": failed: " in line][0]
        .split("] ")[1]
        .startswith(f"{six_studies / 'Broken_006'}: failed: ")
    )
    assert out.splitlines()[-1].startswith("6 studies: 0 done, 5 skipped, 1 failed (")
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()} == written  # nothing rewritten
    # with the broken study gone, nothing is left to do: no cluster is even asked (none answers there)
    shutil.rmtree(six_studies / "Broken_006")
    code, out, err = run(capsys, *argv[:-2], "--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "1")
    assert code == 0, out + err
    assert out.splitlines()[-1].startswith("5 studies: 0 done, 5 skipped, 0 failed (")


def test_a_study_without_its_report_is_not_complete(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A study whose report is missing (a write that stopped) is done again; one with it is skipped."""
    folder = tmp_path / "data" / "Tiny_001"
    write_tiny_study(folder, "Tiny_001", shape=SHAPE, seg=False)
    args = argparse.Namespace(
        **{"mapping": None, "name": None, "harmonise": "auto", "dicom_seg": False, "no_progress": True},
        **{"output": tmp_path / "out", "model": tiny_model_dir, "device": "cpu", "backend": None},
        **{"uncertain_map": False, "save_preprocessed": False, "roi_size": None, "overlap": None},
        **{"sw_batch_size": None, "tta": None, "postprocess": True},
    )
    first = predict_study(folder, args, single=False, skip_complete=True)
    assert first.status == "done" and first.model_id is not None and first.pid == os.getpid()
    assert predict_study(folder, args, single=False, skip_complete=True).status == "skipped"
    (tmp_path / "out" / "Tiny_001_report.json").unlink()
    (tmp_path / "out" / "Tiny_001_seg.nii.gz").write_bytes(b"half")  # what a stopped write could leave
    again = predict_study(folder, args, single=False, skip_complete=True)
    assert again.status == "done" and again.model_id == first.model_id  # the model of this process, again
    assert nib.load(tmp_path / "out" / "Tiny_001_seg.nii.gz").shape == SHAPE


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--workers", "0"], "argument --workers: expected a whole number >= 1, found '0'"),
        (["--workers", "two"], "argument --workers: expected a whole number >= 1, found 'two'"),
        (["--scheduler", "http://10.0.0.5:8786"], "argument --scheduler: expected a Dask scheduler address"),
        (["--scheduler", "10.0.0.5"], "found '10.0.0.5'"),
        (["--scheduler", "tcp://host:70000"], "port 1-65535), found 'tcp://host:70000'"),
        (["--workers", "2", "--scheduler", "tcp://h:1"], "argument --scheduler: not allowed with argument"),
        (["--connect-timeout", "0"], "argument --connect-timeout: expected a positive number, found '0'"),
    ],
)
def test_bad_cluster_options_exit_2(option: list[str], message: str, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(tmp_path), "-o", str(tmp_path / "out"), *option])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@needs_dask
@pytest.mark.parametrize("listening", [False, True], ids=["closed port", "silent listener"])
def test_a_scheduler_that_does_not_answer_is_an_error_not_a_hang(
    listening: bool, six_studies: Path, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    with socket.socket() as s:  # closed: nothing listens; listening: accepts, never says a word
        s.bind(("127.0.0.1", 0))
        if listening:
            s.listen(8)
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
        if not listening:
            s.close()
        started = time.perf_counter()
        code, _, err = run(
            capsys, "predict", six_studies, "-o", tmp_path / "out", "--model", tiny_model_dir,
            "--scheduler", address, "--connect-timeout", "1",
        )  # fmt: skip
        assert time.perf_counter() - started < 15
    assert code == 2 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith(
        f"brats-seg predict: error: --scheduler {address}: no Dask scheduler answered within 1 s"
    )
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_without_cluster_options_dask_is_never_imported(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "Tiny_001"
    write_tiny_study(folder, "Tiny_001", shape=SHAPE, seg=False)
    code = (
        "import sys\n"
        "from brats_seg.cli import main\n"
        f"assert main(['predict', {str(folder)!r}, '-o', {str(tmp_path / 'out')!r}, "
        f"'--model', {str(tiny_model_dir)!r}, '--no-progress']) == 0\n"
        f"assert main(['check', {str(folder)!r}]) == 0\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed'))\n"
        "assert not loaded, loaded\n"
        "print('no dask')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert result.returncode == 0 and "no dask" in result.stdout, result.stdout + result.stderr


@needs_dask
def test_check_on_a_running_scheduler_prints_the_lines_of_a_run_without_one(
    six_studies: Path, tmp_path: Path, capsys
) -> None:
    from distributed import LocalCluster

    code, alone, _ = run(capsys, "check", six_studies)
    assert code == 2
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster:
        code, out, err = run(capsys, "check", six_studies, "--scheduler", cluster.scheduler_address)
    assert code == 2, out + err
    lines = study_lines(out)
    assert len(lines) == 6 and lines[-1].split("]")[0].endswith(", 0 left"), out
    assert sorted(line.split("] ", 1)[1] for line in lines) == sorted(
        line for line in alone.splitlines() if line.startswith(("Tiny_", str(six_studies)))
    )
    assert any("Broken_006_t2.nii.gz: corrupt or truncated gzip" in line for line in lines)
    closing = out.splitlines()[-1]
    assert closing.startswith("6 studies: 0 ok, 5 with warnings, 1 refused (") and closing.endswith(
        f" s on {cluster.scheduler_address})"
    )


@needs_dask
def test_evaluate_on_two_local_workers_gives_the_scores_of_a_run_without_them(
    tiny_data_dir: Path, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    common = ("--model", tiny_model_dir, "--no-progress")
    assert run(capsys, "evaluate", tiny_data_dir, "-o", tmp_path / "seq", *common)[0] == 0
    code, out, err = run(
        capsys, "evaluate", tiny_data_dir, "-o", tmp_path / "dask", *common, "--workers", "2"
    )
    assert code == 0, out + err
    assert len(study_lines(out)) == 3 and "3 studies: 3 scored, 0 failed (" in out
    seq, par = ((tmp_path / r / "scores.csv").read_text().splitlines() for r in ("seq", "dask"))
    assert [line.rsplit(",", 1)[0] for line in seq] == [line.rsplit(",", 1)[0] for line in par]  # but seconds


@pytest.mark.parametrize("command", ["predict", "check", "evaluate"])
def test_help_states_the_cluster_options_and_their_defaults(command: str, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option, default in [
        ("--workers N", "(default: no cluster: one study after another in this process)"),
        ("--scheduler ADDRESS", "(default: no cluster)"),
        ("--connect-timeout SECONDS", "(default: 10.0)"),
    ]:
        after = text.rsplit(option, 1)[1]  # its help, after the usage line
        assert after[after.index("(default:") :].startswith(default), (option, after)


def half_or_fail(x: int) -> float:
    """A task for :func:`brats_seg.cluster.map_unordered`: fails on odd numbers, as a bad study would."""
    if x % 2:
        raise RuntimeError(f"odd: {x}")
    return x / 2


@needs_dask
def test_map_unordered_gives_every_result_and_every_error() -> None:
    from distributed import Client, LocalCluster

    from brats_seg.cli.on_cluster import failure
    from brats_seg.cluster import map_unordered
    from brats_seg.errors import StudyError

    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        got = {i: (result, error) for i, result, error in map_unordered(client, half_or_fail, [4, 3, 2, 1])}
    assert {i: r for i, (r, e) in got.items() if e is None} == {0: 2.0, 2: 1.0}
    assert {i: str(e) for i, (r, e) in got.items() if e is not None} == {1: "odd: 3", 3: "odd: 1"}
    assert failure("S1", got[1][1]).reason == "internal error: RuntimeError: odd: 3"
    assert failure("S2", StudyError("S2_t2.nii.gz: truncated")).reason == "S2_t2.nii.gz: truncated"
