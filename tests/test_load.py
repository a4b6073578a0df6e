"""Three browser sessions on one real Voilà server at once (Playwright + Debian's chromium): each uploads a
different real study and presses Predict at the same moment. The server takes turns (brats_seg.turns):
each session gets exactly the labels a solo run gave, none errors, and each page says how long it waited.
Then one tab is closed: its kernel is culled and its temporary folder is gone.

Prints each session's wait and total time (the figures of the note). Screenshots go to artifacts/browser/.
"""

from __future__ import annotations

import base64
import gzip
import re
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts" / "browser"
CASES = ["brats/Brats18_CBICA_ABM_1", "brats/Brats18_CBICA_AMH_1", "demo/BraTS-GLI-00001-000"]

pytestmark = [pytest.mark.browser, pytest.mark.data]

PREDICT_ENABLED = (
    "() => { const b = document.querySelector('.brats-predict button, button.brats-predict');"
    " return b && !b.disabled; }"
)
DONE = (
    "() => { const l = document.querySelector('.brats-progress-label');"
    " return l && l.innerText.startsWith('Done'); }"
)
SEG_HREF = (
    "() => { const a = [...document.querySelectorAll('.brats-downloads a')]"
    ".find(a => a.getAttribute('download').endsWith('_seg.nii.gz')); return a ? a.href : null; }"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, shared_data: Path):
    """A Voilà server with kernels culled 4 s after their page closes.

    Its kernels' temporary files are in ``tmp``.
    """
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    from helpers import voila_server

    root = tmp_path_factory.mktemp("load")
    tmp, turns = root / "tmp", root / "turns"
    tmp.mkdir()
    with voila_server(
        ROOT,
        root,
        env={"TMPDIR": str(tmp), "BRATS_SEG_TURNS_DIR": str(turns)},
        args=("--MappingKernelManager.cull_idle_timeout=4", "--MappingKernelManager.cull_interval=2"),
    ) as url:
        yield {"url": url, "tmp": tmp}


def upload(page, case: Path) -> None:
    with page.expect_file_chooser() as fc:
        page.click(".brats-upload")
    fc.value.set_files(sorted(str(p) for p in case.glob("*.nii.gz") if not p.name.endswith("_seg.nii.gz")))
    page.wait_for_function(PREDICT_ENABLED, timeout=120_000)
    quick = page.locator(".brats-quick input[type=checkbox]").first
    if quick.is_visible() and not quick.is_checked():
        quick.check()  # Quick prediction: four sessions' worth of work stays within a test's minutes


def labels_of(page) -> np.ndarray:
    href = page.evaluate(SEG_HREF)
    assert href and href.startswith("data:"), href
    raw = gzip.decompress(base64.b64decode(href.split(",", 1)[1]))
    return np.asarray(nib.Nifti1Image.from_bytes(raw).dataobj)


def session_dirs(tmp: Path) -> set[str]:
    return {p.name for p in tmp.glob("brats_seg_session_*")}


def test_three_sessions_at_once_take_turns_and_get_their_own_labels(server: dict, shared_data: Path) -> None:
    from playwright.sync_api import sync_playwright

    cases = [shared_data / c for c in CASES]
    if not all(c.is_dir() for c in cases):
        pytest.skip(f"cases not found: {[str(c) for c in cases if not c.is_dir()]}")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
        )
        pages = []
        for _ in cases:
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.goto(server["url"], timeout=120_000)
            page.wait_for_selector(".brats-upload", timeout=120_000)
            pages.append(page)
        # solo: one session at a time, each case once
        solo = []
        for case in cases:
            upload(pages[0], case)
            pages[0].locator(".brats-predict button, button.brats-predict").first.click()
            pages[0].wait_for_function(DONE, timeout=300_000)
            solo.append(labels_of(pages[0]))
        # together: the three sessions press Predict at once
        for page, case in zip(pages, cases, strict=True):
            upload(page, case)
        t0 = time.perf_counter()
        for page in pages:
            page.locator(".brats-predict button, button.brats-predict").first.click()
        waits = {}
        for n, page in enumerate(pages):
            page.wait_for_function(DONE, timeout=300_000)
            waits[n] = page.inner_text(".brats-progress-label")
        total = time.perf_counter() - t0
        for n, page in enumerate(pages):
            page.screenshot(path=str(ARTIFACTS / f"load_session_{n + 1}.png"))
            assert page.locator(".brats-message .brats-msg-error").count() == 0, page.inner_text(
                ".brats-message"
            )
            assert np.array_equal(labels_of(page), solo[n]), (
                f"session {n + 1}'s labels differ from its solo run"
            )
        print(f"\nthree sessions at once, all done {total:.1f} s after the first click:")
        for n, text in waits.items():
            print(f"  session {n + 1} ({Path(CASES[n]).name}): {text}")
        waited = [float(m[1]) if (m := re.search(r"waited (\d+\.\d) s", t)) else 0.0 for t in waits.values()]
        assert sum(w > 0 for w in waited) >= 1, waits  # someone queued: the server took turns

        # a closed tab: its kernel is culled and its temporary folder removed
        time.sleep(3)
        before = session_dirs(server["tmp"])
        pages[1].close()
        deadline = time.time() + 60
        while time.time() < deadline and not (before - session_dirs(server["tmp"])):
            time.sleep(1)
        gone = before - session_dirs(server["tmp"])
        print(f"  closed tab: session folders {len(before)} before, gone after culling: {sorted(gone)}")
        assert len(gone) == 1, (before, session_dirs(server["tmp"]))
        pages[0].locator(
            ".brats-predict button, button.brats-predict"
        ).first.click()  # the others keep working
        pages[0].wait_for_function(DONE, timeout=300_000)
        assert np.array_equal(labels_of(pages[0]), solo[0])
        browser.close()
