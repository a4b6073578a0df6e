"""Tests for :mod:`brats_seg.ui.example` and the "Load example" button: pooch download with
pinned sha256, cache, offline message; a local folder."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest
from test_ui_support import make_app, predict_ok, upload_value

from brats_seg.ui import App, example
from brats_seg.ui.example import ExampleError, ExampleUnreachable, fetch_example

#: The shared fixtures (``app``, ``tiny_paths``, and no test reaching the public example address).
pytest_plugins = ["test_ui_support"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_example_downloads_checks_and_caches(tiny_paths: dict[str, Path], tmp_path: Path) -> None:
    folder = tiny_paths["T1"].parent
    pinned = {p.name: _sha(p) for p in tiny_paths.values()}
    got = fetch_example(folder.as_uri(), files=pinned, cache_dir=tmp_path, timeout=5)
    assert {n: _sha(p) for n, p in got.items()} == pinned
    assert all(p.parent == tmp_path / "examples" for p in got.values())
    # cached: a broken address is not even asked
    again = fetch_example("file:///nonexistent/folder", files=pinned, cache_dir=tmp_path)
    assert again == got


@pytest.fixture
def http_folder(tiny_paths: dict[str, Path]):
    """The tiny study's folder served over HTTP on a loopback port (the way the public example is served)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tiny_paths["T1"].parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_example_over_http(tiny_paths: dict[str, Path], tmp_path: Path, http_folder: str) -> None:
    """Over HTTP (pooch's downloader): fetched, checked and cached; a missing file is "unreachable", a
    file with other bytes than the pinned ones is discarded."""
    pinned = {p.name: _sha(p) for p in tiny_paths.values()}
    got = fetch_example(http_folder, files=pinned, cache_dir=tmp_path, timeout=5)
    assert {n: _sha(p) for n, p in got.items()} == pinned
    assert fetch_example("http://127.0.0.1:9/nothing", files=pinned, cache_dir=tmp_path, timeout=2) == got
    with pytest.raises(ExampleUnreachable, match="could not download the example file absent") as missing:
        fetch_example(http_folder, files={"absent.nii.gz": "0" * 64}, cache_dir=tmp_path / "other", timeout=5)
    assert missing.value.url == f"{http_folder}/absent.nii.gz" and "404" in missing.value.reason
    name = tiny_paths["T1"].name
    with pytest.raises(ExampleError, match=f"has sha256 {pinned[name]}, expected 0+; it was discarded"):
        fetch_example(http_folder, files={name: "0" * 64}, cache_dir=tmp_path / "other", timeout=5)
    assert not list((tmp_path / "other" / "examples").iterdir())


def test_fetch_example_failures(
    tiny_paths: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tiny_paths["T1"].parent
    name = tiny_paths["T1"].name
    with pytest.raises(ExampleUnreachable, match="could not download the example file") as missing:
        fetch_example((tmp_path / "missing").as_uri(), files={name: "0" * 64}, cache_dir=tmp_path)
    assert missing.value.url == f"{(tmp_path / 'missing').as_uri()}/{name}" and missing.value.reason
    with pytest.raises(ExampleUnreachable, match="could not download"):
        fetch_example("http://127.0.0.1:9/nothing", files={name: "0" * 64}, cache_dir=tmp_path, timeout=2)
    # the server answered: not "unreachable", so the dashboard keeps its button
    with pytest.raises(
        ExampleError, match=f"{name}: the file downloaded from .* has sha256 .*expected 0+; it was discarded"
    ) as mismatch:
        fetch_example(folder.as_uri(), files={name: "0" * 64}, cache_dir=tmp_path)
    assert not isinstance(mismatch.value, ExampleUnreachable)
    monkeypatch.setattr(example, "MAX_DOWNLOAD_BYTES", 100)
    with pytest.raises(ExampleError, match="exceeds 100 bytes; refused") as large:
        fetch_example(folder.as_uri(), files={name: "0" * 64}, cache_dir=tmp_path)
    assert not isinstance(large.value, ExampleUnreachable)
    with pytest.raises(
        ExampleError, match="cannot be opened .*expected an https://, http:// or file:// address"
    ) as bad:
        fetch_example("no-scheme/folder", files={name: "0" * 64}, cache_dir=tmp_path)
    assert not isinstance(bad.value, ExampleUnreachable)
    assert not list((tmp_path / "examples").iterdir())  # nothing half-written or unverified is kept


def test_example_button_failures_leave_the_app_usable(
    tiny_model_dir: Path, tiny_paths: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(example.EXAMPLE_DIR_ENV, raising=False)
    # a server that sends other bytes than the pinned ones: the next try may work, the button stays
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    for name in example.EXAMPLE_FILES:
        (wrong / name).write_bytes(b"not the example")
    app = make_app(tiny_model_dir, tmp_path, example_url=wrong.as_uri())
    app.page.example_button.click()
    assert (
        app.state.message_kind == "error"
        and "sha256" in app.state.message_text
        and "discarded" in app.state.message_text
    )
    assert app.page.example_button.layout.display != "none" and app.page.example_note.layout.display == "none"
    assert not app.page.example_button.disabled and not app.busy
    # a configured example folder that is not there
    app.example_dir = tmp_path / "no_such_study"
    app.page.example_button.click()
    assert app.state.message_kind == "error" and "example folder" in app.state.message_text
    assert app.page.example_button.layout.display != "none"
    app.page.upload.value = upload_value(list(tiny_paths.values()))
    predict_ok(app)


def test_unreachable_example_hides_the_button_and_says_what_to_do(
    tiny_model_dir: Path, tiny_paths: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline (here: a file:// address of a folder that does not exist), "Load example" would fail
    on every click: it is hidden, and the page says how to get a study in instead."""
    monkeypatch.delenv(example.EXAMPLE_DIR_ENV, raising=False)
    nowhere = tmp_path / "nowhere"
    app = make_app(tiny_model_dir, tmp_path, example_url=nowhere.as_uri())
    assert app.page.example_button.layout.display != "none" and app.page.example_note.layout.display == "none"
    app.page.example_button.click()
    text = app.state.message_text
    assert app.state.message_kind == "error", text
    assert "The example study cannot be downloaded from this server" in text and nowhere.as_uri() in text
    assert '"Upload files"' in text and example.EXAMPLE_DIR_ENV in text
    assert app.page.example_button.layout.display == "none"
    assert app.page.example_note.layout.display != "none"
    assert (
        "upload the files" in app.page.example_note.value
        and example.EXAMPLE_DIR_ENV in app.page.example_note.value
    )
    assert not app.busy and app.state.study is None
    app.page.upload.value = upload_value(list(tiny_paths.values()))  # the upload still works
    predict_ok(app)
    assert app.page.example_button.layout.display == "none"  # and the button stays hidden


def test_example_url_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(example.EXAMPLE_DIR_ENV, raising=False)
    monkeypatch.setenv(example.EXAMPLE_URL_ENV, "file:///somewhere")
    assert App(model_dir=tmp_path, synchronous=True).example_url == "file:///somewhere"
    monkeypatch.delenv(example.EXAMPLE_URL_ENV)
    assert App(model_dir=tmp_path, synchronous=True).example_url == example.EXAMPLE_URL


@pytest.mark.data
def test_load_example_from_a_local_folder(
    demo_case: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(example.EXAMPLE_DIR_ENV, str(demo_case))
    app = make_app(tiny_model_dir, tmp_path)
    assert app.example_dir == demo_case
    app.page.example_button.click()
    assert app.state.message_kind == "info", app.state.message_text
    assert app.state.study.name == "BraTS-GLI-00001-000" and app.state.study.truth is None
    assert {d.value for d in app.modality_dropdowns.values()} == {"T1", "T1CE", "T2", "FLAIR"}
    assert not app.page.predict_button.disabled


@pytest.mark.data
def test_load_example_from_a_file_url(
    brats_case: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(example.EXAMPLE_DIR_ENV, raising=False)
    app = make_app(tiny_model_dir, tmp_path, example_url=brats_case.as_uri())
    app.page.example_button.click()
    assert app.state.message_kind == "info", app.state.message_text
    assert app.state.study.name == "Brats18_CBICA_ABM_1" and app.state.study.truth is not None
    cached = sorted(p.name for p in (tmp_path / "cache" / "examples").iterdir())
    assert cached == sorted(example.EXAMPLE_FILES)
    assert not app.page.predict_button.disabled
