"""The research-PACS node (``brats_seg.pacs``, ``brats-seg pacs``) against a real Orthanc.

A fixture starts Debian's Orthanc from a JSON config on free loopback ports, with its storage under
tmp, and stops it at the end; the tests skip when ``/usr/sbin/Orthanc`` is absent. Studies are tiny
generated DICOM series uploaded by Orthanc's REST API; the tiny model segments them.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import brats_affine, tiny_volumes, write_dicom_study

from brats_seg.cli import main
from brats_seg.errors import PacsError, StudyError
from brats_seg.pacs import PacsConfig, find_mr_series, find_studies, load_state, run_study

ORTHANC = Path("/usr/sbin/Orthanc")
OUR_AE, ORTHANC_AE = "BRATS_TEST", "ORTHANC_TEST"
SHAPE = (32, 32, 24)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """A running Orthanc: its REST address and the PACS settings to reach it over DICOM."""

    def __init__(self, root: Path) -> None:
        self.http, self.dicom = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http}"
        config = {
            "Name": "brats-seg-tests",
            "HttpPort": self.http,
            "DicomPort": self.dicom,
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "index"),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAet": ORTHANC_AE,
            "DicomCheckCalledAet": True,
            "DicomModalities": {"brats": [OUR_AE, "127.0.0.1", free_port()]},
            "DicomAlwaysAllowStore": False,
            "DicomAlwaysAllowEcho": False,
            "DicomCheckModalityHost": False,
            "Plugins": [],
            "SaveJobs": False,
        }
        (root / "orthanc.json").write_text(json.dumps(config))
        self.root = root
        self.start()

    def start(self) -> None:
        """Start Orthanc on this config: the same ports, storage and index (a restart keeps the studies)."""
        self.log = open(self.root / "orthanc.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [str(ORTHANC), str(self.root / "orthanc.json")], stdout=self.log, stderr=self.log
        )

    def wait(self, seconds: float = 30.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.get("/system")
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(
            f"Orthanc did not answer on {self.url} in {seconds} s: "
            + (self.root / "orthanc.log").read_text()[-2000:]
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return r.read()

    def upload(self, files: list[Path]) -> None:
        for path in files:
            request = urllib.request.Request(self.url + "/instances", data=path.read_bytes(), method="POST")
            with urllib.request.urlopen(request, timeout=10) as r:
                assert r.status == 200

    def config(self, **changes) -> PacsConfig:
        settings = {"called_ae": ORTHANC_AE, "calling_ae": OUR_AE, "timeout": 10, **changes}
        return PacsConfig("127.0.0.1", self.dicom, **settings)

    def instances_of(self, study_uid: str, modality: str) -> list[str]:
        """Orthanc's ids of the instances of ``modality`` in the study."""
        query = {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid, "Modality": modality}}
        request = urllib.request.Request(
            self.url + "/tools/find", data=json.dumps(query).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            return json.loads(r.read())


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    if not ORTHANC.exists():
        pytest.skip(f"Orthanc not installed at {ORTHANC} (apt-get install orthanc)")
    server = Orthanc(tmp_path_factory.mktemp("orthanc"))
    try:
        server.wait()
        yield server
    finally:
        server.stop()


def upload_study(
    orthanc: Orthanc, folder: Path, *, seed: int, drop: str | None = None, study_date: str = "", **kw
) -> str:
    """Write a tiny DICOM study (without the ``drop`` sequence; of ``study_date`` when given) and
    upload it; returns its UID."""
    import pydicom
    from pydicom.uid import generate_uid

    images, _ = tiny_volumes(SHAPE, seed=seed)
    if drop:
        images.pop(drop)
    uid = generate_uid()
    files = write_dicom_study(folder, images, brats_affine(SHAPE), study_uid=uid, **kw)
    for path in (f for series in files.values() for f in series) if study_date else ():
        ds = pydicom.dcmread(path)
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
        ds.save_as(path, enforce_file_format=True)
    orthanc.upload([f for series in files.values() for f in series])
    return uid


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir: Path):
    from brats_seg.model import load_model

    return load_model(tiny_model_dir, device="cpu")


def assert_seg_holds(seg_path: Path, study, labels: np.ndarray) -> None:
    """The SEG's segments 1, 2, 3 on the T1CE's frames are, voxel for voxel, labels 1, 2 and 4.

    As tests/test_files_dicom.py checks a SEG: the pixels per source frame, in (slice, row, column),
    transposed back to the labels' (i, j, k), the way the writer turns them.
    """
    import highdicom as hd

    seg = hd.seg.segread(seg_path)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == study.dicom["T1CE"].uid
    uids = [h.SOPInstanceUID for h in study.dicom["T1CE"].headers]
    masks = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1, 2, 3])
    assert masks.shape[:3] == labels.shape[::-1]
    for n, value in ((1, 1), (2, 2), (3, 4)):
        np.testing.assert_array_equal(masks[..., n - 1].transpose(2, 1, 0) > 0, labels == value)
    assert {1, 2, 4} & set(np.unique(labels).tolist()), "a test of nothing: the labels are empty"


def concept(item) -> str:
    """The meaning of an SR content item's concept name ("" when it has none)."""
    names = item.get("ConceptNameCodeSequence", [])
    return str(names[0].CodeMeaning) if names else ""


def sr_volumes(sr) -> dict[str, float]:
    """The SR's volume (mL) per tracking identifier (label or region name), from each TID 1501 group."""
    found: dict[str, float] = {}
    stack = [sr]
    while stack:
        items = list(stack.pop().get("ContentSequence", []))
        stack += items
        names = [i.TextValue for i in items if concept(i) == "Tracking Identifier"]
        nums = [i for i in items if concept(i) == "Volume"]
        for name, num in zip(names, nums, strict=True):  # ET is a label and a region: the same volume
            value = float(num.MeasuredValueSequence[0].NumericValue)
            assert found.setdefault(name, value) == value, name
    return found


def test_run_study_stores_a_seg_with_the_pipeline_labels_and_an_sr(
    orthanc: Orthanc, tiny_model, tmp_path: Path
) -> None:
    import pydicom

    from brats_seg import pipeline
    from brats_seg.harmonise import load_for_model

    uid = upload_study(orthanc, tmp_path / "study", seed=5)
    assert uid in [s["StudyInstanceUID"] for s in find_studies(orthanc.config())]
    summary = run_study(orthanc.config(), uid, model=tiny_model, output_dir=tmp_path / "out")
    assert summary["stored"] == [f"{uid}_seg.dcm", f"{uid}_sr.dcm"]
    assert all("Phantom" not in Path(f).name for f in summary["files"])
    report = (tmp_path / "out" / uid / f"{uid}_report.json").read_text()
    assert "Phantom" not in report
    # the SEG on the PACS holds, voxel for voxel, the labels the pipeline gives the same study
    (seg_id,) = orthanc.instances_of(uid, "SEG")
    seg_path = tmp_path / "seg.dcm"
    seg_path.write_bytes(orthanc.get(f"/instances/{seg_id}/file"))
    study, harmonised = load_for_model(tmp_path / "study", name="local")
    labels = np.asarray(pipeline.segment(study, tiny_model, harmonised=harmonised).output_labels.array)
    assert_seg_holds(seg_path, study, labels)
    # the SR on the PACS holds the report's volume (mL) of each label and region
    (sr_id,) = orthanc.instances_of(uid, "SR")
    sr = pydicom.dcmread(io.BytesIO(orthanc.get(f"/instances/{sr_id}/file")))
    values = [str(e.value) for e in sr.iterall() if e.keyword in ("TextValue", "CodeMeaning", "NumericValue")]
    assert {"Volume", "NCR", "ED", "ET", "TC", "WT", tiny_model.card.name} <= set(values), values
    volumes = json.loads(report)["volumes"]
    expected = {n: round(v["mL"], 3) for part in ("labels", "regions") for n, v in volumes[part].items()}
    assert sr_volumes(sr) == pytest.approx(expected, abs=1e-3)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR


def test_watch_processes_each_study_once_and_names_failures(
    orthanc: Orthanc, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    good = [upload_study(orthanc, tmp_path / f"s{i}", seed=10 + i) for i in range(2)]
    bad = upload_study(orthanc, tmp_path / "noflair", seed=12, drop="FLAIR")
    state = tmp_path / "state.json"
    done_before = set(load_state(state)["done"])
    argv = [
        "pacs", "watch", "--host", "127.0.0.1", "--port", str(orthanc.dicom), "--called-ae", ORTHANC_AE,
        "--calling-ae", OUR_AE, "--output", str(tmp_path / "out"), "--state", str(state), "--once",
        "--model", str(tiny_model_dir), "--device", "cpu",
    ]  # fmt: skip
    code = main(argv)
    out = capsys.readouterr().out
    assert code == 2
    for uid in good:
        assert f"{uid}: processed" in out
        assert orthanc.instances_of(uid, "SEG")
    (line,) = [line for line in out.splitlines() if line.startswith(f"{bad}: failed")]
    assert "FLAIR" in line and ORTHANC_AE in line, line
    saved = load_state(state)
    assert set(good) <= set(saved["done"]) - done_before and bad in saved["failed"]
    # a second pass does nothing new
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "processed in" not in out and "failed:" not in out and "0 processed, 0 failed" in out


def test_a_study_whose_results_are_on_the_pacs_is_not_stored_twice(
    orthanc: Orthanc, tiny_model, tmp_path: Path
) -> None:
    from brats_seg.pacs import save_state, watch_pass

    uid = upload_study(orthanc, tmp_path / "s", seed=40)
    state, lines = tmp_path / "state.json", []
    options = {"get_model": lambda: tiny_model, "output_dir": tmp_path / "out", "state_path": state}
    watch_pass(orthanc.config(), log=lines.append, **options)  # the other tests' studies too
    assert any(line.startswith(f"{uid}: processed") for line in lines), lines
    # a crash after storing, before the state was written: the study is not in the state
    saved = load_state(state)
    del saved["done"][uid]
    save_state(state, saved)
    del lines[:]
    assert watch_pass(orthanc.config(), log=lines.append, **options) == (1, 0)  # this study alone
    (line,) = [line for line in lines if line.startswith(uid)]
    assert "already on" in line and "nothing fetched, segmented or stored" in line, line
    assert len(orthanc.instances_of(uid, "SEG")) == 1 and len(orthanc.instances_of(uid, "SR")) == 1
    assert uid in load_state(state)["done"]
    # the SR alone missing (a crash between the two C-STOREs): only the SR is stored again
    (sr_id,) = orthanc.instances_of(uid, "SR")
    urllib.request.urlopen(urllib.request.Request(f"{orthanc.url}/instances/{sr_id}", method="DELETE"))
    summary = run_study(orthanc.config(), uid, model=tiny_model, output_dir=tmp_path / "again")
    assert summary["stored"] == [f"{uid}_sr.dcm"]
    assert len(orthanc.instances_of(uid, "SEG")) == 1 and len(orthanc.instances_of(uid, "SR")) == 1


def test_watch_since_and_max_studies_take_the_archive_in_slices(
    orthanc: Orthanc, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    # later than every other test's study (20260101): --since picks these alone
    old = upload_study(orthanc, tmp_path / "old", seed=50, study_date="20300101")
    new = upload_study(orthanc, tmp_path / "new", seed=51, study_date="20310615")
    state = tmp_path / "state.json"
    argv = [
        "pacs", "watch", "--host", "127.0.0.1", "--port", str(orthanc.dicom), "--called-ae", ORTHANC_AE,
        "--calling-ae", OUR_AE, "--output", str(tmp_path / "out"), "--state", str(state), "--once",
        "--model", str(tiny_model_dir), "--device", "cpu",
    ]  # fmt: skip
    assert main([*argv, "--since", "20310101"]) == 0
    assert set(load_state(state)["done"]) == {new}
    assert f"{new}: processed" in capsys.readouterr().out
    (tmp_path / "state.json").unlink()
    # from 2030 on, one study per pass, oldest first
    for expected in ([old], [old, new]):
        assert main([*argv, "--since", "20300101", "--max-studies", "1"]) == 0
        assert sorted(load_state(state)["done"]) == sorted(expected)
        assert "1 processed, 0 failed" in capsys.readouterr().out
    assert len(orthanc.instances_of(new, "SEG")) == 1  # the second run found it already there
    with pytest.raises(SystemExit):
        main([*argv, "--since", "2030-01-01"])
    assert "expected a date YYYYMMDD, found '2030-01-01'" in capsys.readouterr().err


def test_orthanc_stopped_and_restarted_mid_watch_loses_nothing(
    tmp_path_factory: pytest.TempPathFactory, tiny_model, tmp_path: Path
) -> None:
    from brats_seg.pacs import watch

    if not ORTHANC.exists():
        pytest.skip(f"Orthanc not installed at {ORTHANC} (apt-get install orthanc)")
    server = Orthanc(tmp_path_factory.mktemp("orthanc_restart"))
    try:
        server.wait()
        lines: list[str] = []
        state = tmp_path / "state.json"
        options = {"get_model": lambda: tiny_model, "output_dir": tmp_path / "out", "state_path": state}

        def one_pass() -> int:
            return watch(server.config(timeout=5), once=True, log=lines.append, **options)

        uids = [upload_study(server, tmp_path / "s0", seed=30)]
        assert one_pass() == 0 and set(load_state(state)["done"]) == {uids[0]}
        uids += [upload_study(server, tmp_path / f"s{i}", seed=30 + i) for i in (1, 2)]
        server.stop()
        del lines[:]
        assert one_pass() == 1  # the query failed: said once, nothing raised
        (line,) = lines
        assert "query failed" in line and "unreachable" in line and ORTHANC_AE in line, line
        assert load_state(state) == {"done": {uids[0]: load_state(state)["done"][uids[0]]}, "failed": {}}
        server.start()
        server.wait()
        for _ in range(3):
            if one_pass() == 0 and lines[-1].endswith("0 processed, 0 failed"):
                break
        assert lines[-1].endswith("0 processed, 0 failed"), lines
        saved = load_state(state)
        assert sorted(saved["done"]) == sorted(uids) and not saved["failed"]
        for uid in uids:
            assert len(server.instances_of(uid, "SEG")) == 1 and len(server.instances_of(uid, "SR")) == 1
            assert sum(f"{uid}: processed" in line for line in lines) == (0 if uid == uids[0] else 1)
    finally:
        server.stop()


def test_to_dicom_then_pacs_send_gives_a_study_the_node_runs(
    orthanc: Orthanc, tiny_model, tmp_path: Path, capsys
) -> None:
    from helpers import write_tiny_study

    write_tiny_study(tmp_path / "Tiny_007", shape=SHAPE, seg=False, seed=7)
    assert (
        main(["to-dicom", str(tmp_path / "Tiny_007"), "-o", str(tmp_path / "dcm"), "--patient-id", "P7"]) == 0
    )
    uid = capsys.readouterr().out.split("DICOM study ")[1].split()[0]
    base = [
        "--host",
        "127.0.0.1",
        "--port",
        str(orthanc.dicom),
        "--called-ae",
        ORTHANC_AE,
        "--calling-ae",
        OUR_AE,
    ]
    assert main(["pacs", "send", *base, str(tmp_path / "dcm")]) == 0
    assert f"{4 * SHAPE[2]} files stored to" in capsys.readouterr().out
    assert len(find_mr_series(orthanc.config(), uid)) == 4
    summary = run_study(orthanc.config(), uid, model=tiny_model, output_dir=tmp_path / "out")
    assert summary["stored"] == [f"{uid}_seg.dcm", f"{uid}_sr.dcm"]
    (tmp_path / "empty").mkdir()
    assert main(["pacs", "send", *base, str(tmp_path / "empty")]) == 2
    assert "empty: expected a folder of DICOM files, found none" in capsys.readouterr().err


def test_refused_and_unreachable_pacs_say_so(orthanc: Orthanc, tmp_path: Path, capsys) -> None:
    with pytest.raises(PacsError, match=r"PACS WRONG_AE@127\.0\.0\.1.*expected an association.*rejected"):
        find_studies(orthanc.config(called_ae="WRONG_AE"))
    with pytest.raises(PacsError, match=r"expected an association.*unreachable"):
        find_studies(PacsConfig("127.0.0.1", free_port(), ORTHANC_AE, calling_ae=OUR_AE, timeout=3))
    # the CLI: one line, exit 2; watch --once logs the failed query and goes on to exit
    base = [
        "--host",
        "127.0.0.1",
        "--port",
        str(orthanc.dicom),
        "--called-ae",
        "WRONG_AE",
        "--calling-ae",
        OUR_AE,
    ]
    assert main(["pacs", "run", *base, "--study-uid", "1.2.3", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "brats-seg pacs: error: PACS WRONG_AE" in err and "rejected" in err
    state = tmp_path / "state.json"
    assert (
        main(["pacs", "watch", *base, "--output", str(tmp_path / "o"), "--state", str(state), "--once"]) == 2
    )
    assert "query failed" in capsys.readouterr().out


def test_watch_backs_off_while_the_pacs_is_unreachable(tmp_path: Path) -> None:
    from brats_seg.pacs import watch

    waits, lines = [], []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 4:
            raise KeyboardInterrupt

    config = PacsConfig("127.0.0.1", free_port(), "NOBODY", calling_ae=OUR_AE, timeout=2)
    with pytest.raises(KeyboardInterrupt):
        watch(config, interval=5, max_backoff=15, log=lines.append, sleep=sleep, get_model=None,
              output_dir=tmp_path, state_path=tmp_path / "state.json")  # fmt: skip
    assert waits == [5, 10, 15, 15]
    assert all("query failed" in line and "unreachable" in line and "retrying in" in line for line in lines)


def test_no_such_study_says_what_was_expected(orthanc: Orthanc) -> None:
    with pytest.raises(PacsError, match=r"expected study 1\.2\.3\.999 with MR series.*found no MR series"):
        find_mr_series(orthanc.config(), "1.2.3.999")


def test_two_flairs_give_the_loaders_ambiguity_message(orthanc: Orthanc, tiny_model, tmp_path: Path) -> None:
    uid = upload_study(orthanc, tmp_path / "two", seed=20, descriptions={"T2": "AX T2 FLAIR"})
    with pytest.raises(StudyError, match=rf"{ORTHANC_AE}.*study {uid}.*FLAIR"):
        run_study(orthanc.config(), uid, model=tiny_model, output_dir=tmp_path / "out")


def test_a_series_that_cannot_be_decoded_is_named(orthanc: Orthanc, tiny_model, tmp_path: Path) -> None:
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import generate_uid

    images, _ = tiny_volumes(SHAPE, seed=21)
    uid = generate_uid()
    files = write_dicom_study(tmp_path / "j2k", images, brats_affine(SHAPE), study_uid=uid)
    for path in files["T2"]:  # JPEG 2000 whose code stream is broken
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(100)])
        ds["PixelData"].VR = "OB"
        ds.save_as(path, enforce_file_format=True)
    orthanc.upload([f for series in files.values() for f in series])
    with pytest.raises(
        StudyError, match=rf"{ORTHANC_AE}.*study {uid}.*pixel data cannot be decoded.*JPEG 2000"
    ):
        run_study(orthanc.config(), uid, model=tiny_model, output_dir=tmp_path / "out")


def test_config_file_and_options(tmp_path: Path) -> None:
    path = tmp_path / "pacs.json"
    path.write_text(json.dumps({"host": "pacs.local", "port": "11112", "called_ae": "PACS"}))
    config = PacsConfig.load(path, calling_ae="ME", host=None)
    assert (config.host, config.port, config.called_ae, config.calling_ae) == (
        "pacs.local",
        11112,
        "PACS",
        "ME",
    )
    path.write_text(json.dumps({"host": "h", "port": 1, "called": "PACS"}))
    with pytest.raises(PacsError, match=r"pacs\.json: expected a JSON object with keys among.*found.*called"):
        PacsConfig.load(path)
    with pytest.raises(PacsError, match="expected host, port and called_ae, missing port, called_ae"):
        PacsConfig.load(None, host="h")


def test_pacs_help_states_every_default(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from test_cli import option_blocks

    from brats_seg import cli

    monkeypatch.setenv("COLUMNS", "100")
    top = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    pacs = next(a for a in top.choices["pacs"]._actions if isinstance(a, argparse._SubParsersAction))
    for command, parser in pacs.choices.items():
        with pytest.raises(SystemExit):
            main(["pacs", command, "--help"])
        blocks = option_blocks(capsys.readouterr().out, parser)
        for action in parser._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            block = blocks[action.option_strings[0]]
            assert ("default" in block) != action.required, f"pacs {command}: {block!r}"


@pytest.mark.data
def test_real_case_from_query_to_stored_seg(orthanc: Orthanc, brats_case: Path, tmp_path: Path) -> None:
    import nibabel as nib

    from brats_seg.model import load_model

    images = {
        m: np.asarray(nib.load(next(brats_case.glob(f"*_{s}.nii.gz"))).dataobj)
        for m, s in (("T1", "t1"), ("T1CE", "t1ce"), ("T2", "t2"), ("FLAIR", "flair"))
    }
    affine = nib.load(next(brats_case.glob("*_t1.nii.gz"))).affine
    from pydicom.uid import generate_uid

    uid = generate_uid()
    files = write_dicom_study(tmp_path / "case", images, affine, study_uid=uid)
    orthanc.upload([f for series in files.values() for f in series])
    model = load_model(None, device="cpu")
    t0 = time.perf_counter()
    summary = run_study(orthanc.config(timeout=60), uid, model=model, output_dir=tmp_path / "out")
    seconds = time.perf_counter() - t0
    assert orthanc.instances_of(uid, "SEG") and orthanc.instances_of(uid, "SR")
    print(
        f"\n{brats_case.name} over DICOM: query to stored SEG and SR in {seconds:.1f} s "
        f"(WT {summary['WT_mL']} mL)"
    )
    assert 10 < summary["WT_mL"] < 500
    shutil.rmtree(tmp_path / "case")
