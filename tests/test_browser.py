"""The dashboard in a real browser: ``voila app.ipynb`` on a loopback port, driven by Playwright with
Debian's chromium (never ``playwright install``). Screenshots go to ``artifacts/browser/``.

Skipped with a reason when chromium, Playwright or the real data are missing.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts" / "browser"

pytestmark = [pytest.mark.browser, pytest.mark.data]


@pytest.fixture(scope="module")
def voila_url(tmp_path_factory: pytest.TempPathFactory):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    if not (ROOT / "model" / "model.json").is_file():
        pytest.skip("no bundled model in model/")
    from helpers import voila_server

    from brats_seg.model import load_model

    # Networks converted for the default backend before the server starts, as binder/postBuild does:
    # the kernels then read them, and the timings below are those of a visitor, not of a first install.
    load_model(ROOT / "model", device="cpu", backend="auto")
    with voila_server(ROOT, tmp_path_factory.mktemp("voila")) as url:
        yield url


def dicom_zip_of(case: Path, tmp_path: Path) -> Path:
    """The case's four sequences written as DICOM series and zipped."""
    import numpy as np
    from helpers import write_dicom_study, zip_tree

    from brats_seg import files

    study = files.load_study(case, load_truth=False)
    folder = tmp_path / case.name
    write_dicom_study(folder, {m: study.images[m].astype(np.int16) for m in study.images}, study.affine)
    out = tmp_path / f"{case.name}_dicom.zip"
    out.write_bytes(zip_tree(folder, compress=True))
    return out


#: Where the review section's top is, in the viewport: its distance from the viewport's top (px) and
#: the viewport's height. The dashboard scrolls the review to the top (``block: 'start'``).
REVIEW_TOP = (
    "() => { const r = document.querySelector('.brats-review');"
    " return r ? {top: r.getBoundingClientRect().top, height: window.innerHeight} : null; }"
)
#: True once the review section's top is in the upper fifth of the viewport.
REVIEW_AT_TOP = (
    "() => { const r = document.querySelector('.brats-review');"
    " if (!r) return false; const t = r.getBoundingClientRect().top;"
    " return t >= -2 && t <= 0.2 * window.innerHeight; }"
)


def settled_review_top(page, timeout: float = 10.0) -> dict[str, float]:
    """:data:`REVIEW_TOP` once the page has stopped scrolling (two reads 250 ms apart agree)."""
    last = page.evaluate(REVIEW_TOP)
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.25)
        now = page.evaluate(REVIEW_TOP)
        if abs(now["top"] - last["top"]) < 0.5:
            return now
        last = now
    raise AssertionError(f"the page was still scrolling after {timeout} s: review section top {last}")


def _predict_locator(page):
    return page.locator(".brats-predict button, button.brats-predict").first


def _upload_and_predict(page, files: list[str]) -> None:
    """Upload the four sequences, press Predict: the review section comes to the top of the page."""
    with page.expect_file_chooser() as fc:
        page.click(".brats-upload")
    fc.value.set_files(files)
    predict = page.locator(".brats-predict button, button.brats-predict").first
    page.wait_for_function(
        "() => { const b = document.querySelector('.brats-predict button, button.brats-predict');"
        " return b && !b.disabled; }",
        timeout=120_000,
    )
    before_predict = page.evaluate(REVIEW_TOP)
    # below the top: the test means something
    assert before_predict["top"] > 0.2 * before_predict["height"], before_predict
    t1 = time.perf_counter()
    predict.click()
    page.wait_for_selector(".brats-volumes table", timeout=300_000)
    page.wait_for_selector(".brats-view-axial", timeout=60_000)
    print(f"Predict to overlay: {time.perf_counter() - t1:.1f} s")
    from helpers import kernel_rss_mb

    print(
        f"kernels' resident memory after Predict: {', '.join(f'{mb:.0f} MB' for mb in kernel_rss_mb(ROOT))}"
    )
    # the page brought the review section to the top of the viewport (JavaScript run by Voila)
    page.wait_for_function(REVIEW_AT_TOP, timeout=15_000)
    after_predict = settled_review_top(page)
    assert -2 <= after_predict["top"] <= 0.2 * after_predict["height"], after_predict
    print(
        f"review section top: {before_predict['top']:.0f} px before Predict, "
        f"{after_predict['top']:.0f} px after"
    )
    page.screenshot(path=str(ARTIFACTS / "predicted_viewport.png"))
    page.screenshot(path=str(ARTIFACTS / "predicted.png"), full_page=True)


def _check_numbers_and_model_line(page) -> None:
    """The volumes table (with its range column) and the model line with its folded details."""
    table = page.inner_text(".brats-volumes")
    assert "WT" in table and "mL" in table
    numbers = [float(x) for x in re.findall(r"\d+\.\d+", table)]
    assert numbers and max(numbers) > 1.0  # a real tumour of several mL
    # each volume's range over the stricter and looser thresholds, and what it means
    assert "range at 0.7\u20130.3 (mL)" in table and "not a confidence interval" in table, table
    wt = re.search(r"WT\s+whole tumour\s+(\d+\.\d+)\s+(\d+\.\d+)\u2013(\d+\.\d+)", table)
    assert wt and float(wt[2]) <= float(wt[1]) <= float(wt[3]), table
    # the model line is one short line; its details open with a click
    status = page.inner_text(".brats-model-status")
    assert "ready" in status and "for research only" in status and "Measured:" not in status, status
    page.click(".brats-model-status summary")
    status = page.inner_text(".brats-model-status")
    assert status.count("Measured: mean Dice WT") == 1 and "CPU thread(s)" in status, status


def _check_slider_overlay_and_click(page) -> None:
    """A slider redraws its view; the uncertain overlay recolours it; a click moves the other views."""
    axial = page.locator(".brats-view-axial").first
    before = axial.get_attribute("src")
    handles = ".brats-slider-axial .ui-slider-handle, .brats-slider-axial [role=slider]"
    slider = page.locator(handles).first
    slider.focus()
    page.keyboard.press("ArrowUp")
    page.wait_for_function(
        "(b) => { const i = document.querySelector('.brats-view-axial');"
        " return i && i.getAttribute('src') !== b; }",
        arg=before,
        timeout=30_000,
    )
    page.screenshot(path=str(ARTIFACTS / "slider_moved.png"), full_page=True)

    # "uncertain voxels": the same slice, recoloured where the label depends on the threshold
    from brats_seg.ui.views import OVERLAY_CHOICES

    before = axial.get_attribute("src")
    page.locator(".brats-overlay-mode select").select_option(label=OVERLAY_CHOICES["uncertain"])
    page.wait_for_function(
        "(b) => { const i = document.querySelector('.brats-view-axial');"
        " return i && i.getAttribute('src') !== b; }",
        arg=before,
        timeout=30_000,
    )
    legend = page.locator(".brats-legend-uncertain")
    assert legend.is_visible() and "uncertain voxels: the label would differ" in legend.inner_text()
    page.screenshot(path=str(ARTIFACTS / "uncertain.png"), full_page=True)
    page.locator(".brats-overlay-mode select").select_option(label=OVERLAY_CHOICES["prediction"])
    legend.wait_for(state="hidden", timeout=30_000)  # the kernel hides it on the next round trip

    # A click on the axial image moves the crosshair there: the sagittal and coronal slices
    # (and their slider readouts) jump to the clicked voxel.
    sagittal = page.locator(".brats-view-sagittal").first
    before = sagittal.get_attribute("src")
    readout = page.locator(".brats-slider-sagittal .widget-readout").first
    value_before = readout.inner_text()
    box = axial.bounding_box()
    assert box is not None
    axial.click(position={"x": box["width"] * 0.3, "y": box["height"] * 0.3})
    page.wait_for_function(
        "(b) => { const i = document.querySelector('.brats-view-sagittal');"
        " return i && i.getAttribute('src') !== b; }",
        arg=before,
        timeout=30_000,
    )
    page.wait_for_function(
        "(v) => { const r = document.querySelector('.brats-slider-sagittal .widget-readout');"
        " return r && r.innerText !== v; }",
        arg=value_before,
        timeout=30_000,
    )
    page.screenshot(path=str(ARTIFACTS / "clicked.png"), full_page=True)


ED_VOLUME = (
    '() => { const c = document.querySelector(\'.brats-volumes tr[data-row="ED"] [data-col="prediction"]\');'
    " return c ? parseFloat(c.getAttribute('data-value')) : null; }"
)
STATUS_HAS = (
    "(t) => { const s = document.querySelector('.brats-edit-status'); return s && s.innerText.includes(t); }"
)


def _link_bytes(page, css: str) -> bytes:
    """The bytes of a download link (a ``data:`` URI)."""
    import base64

    href = page.locator(f"a.{css}").first.get_attribute("href")
    return base64.b64decode(href.split(",", 1)[1])


def _nifti_array(data: bytes):
    import gzip

    import nibabel as nib
    import numpy as np

    return np.asanyarray(nib.Nifti1Image.from_bytes(gzip.decompress(data)).dataobj)


def _drag_on_axial(page) -> float:
    """Drag the brush across the axial view; returns the seconds from mouse-up to the status update."""
    axial = page.locator(".brats-view-axial").first
    box = axial.bounding_box()
    assert box is not None
    x0, y0 = box["x"] + box["width"] * 0.35, box["y"] + box["height"] * 0.45
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + box["width"] * 0.2, y0 + box["height"] * 0.05, steps=12)
    t = time.perf_counter()
    page.mouse.up()
    page.wait_for_function(STATUS_HAS, arg="corrected (", timeout=30_000)
    return time.perf_counter() - t


def _check_editing(page) -> None:
    """Brush a stroke on the axial view: the ED volume grows; undo and redo; the NIfTI holds the edit."""
    model_nifti = _nifti_array(_link_bytes(page, "brats-download-nifti"))
    ed_before = page.evaluate(ED_VOLUME)
    page.locator(".brats-edit-tool button", has_text="Brush").first.click()
    page.locator(".brats-edit-label button", has_text="ED").first.click()
    page.locator(".brats-view-axial").first.hover()  # the pointer becomes the brush, at its size
    page.wait_for_function(
        "() => getComputedStyle(document.querySelector('.brats-view-axial')).cursor.includes('url(')",
        timeout=30_000,
    )
    seconds = _drag_on_axial(page)
    page.wait_for_function(f"() => ({ED_VOLUME})() > {ed_before}", timeout=30_000)
    status = page.inner_text(".brats-edit-status")
    changed = int(re.search(r"corrected \((\d+) voxels changed\)", status)[1])
    assert changed > 0 and f"corrected ({changed} voxels changed)" in page.inner_text(".brats-volumes")
    print(f"browser: mouse-up to the redrawn views and status {seconds * 1000:.0f} ms ({changed} voxels)")
    page.screenshot(path=str(ARTIFACTS / "edited.png"), full_page=True)
    page.click(".brats-edit-undo")
    page.wait_for_function(STATUS_HAS, arg="the model's labels", timeout=30_000)
    page.wait_for_function(f"() => ({ED_VOLUME})() === {ed_before}", timeout=30_000)
    page.click(".brats-edit-redo")
    page.wait_for_function(STATUS_HAS, arg=f"corrected ({changed} voxels changed)", timeout=30_000)
    page.wait_for_selector(".brats-downloads-corrected", timeout=60_000)
    corrected = _nifti_array(_link_bytes(page, "brats-download-nifti"))
    assert corrected.shape == model_nifti.shape and int((corrected != model_nifti).sum()) == changed
    assert (corrected[corrected != model_nifti] == 2).all()
    report = json.loads(_link_bytes(page, "brats-download-json"))
    assert report["correction"]["changed_voxels"] == changed
    page.screenshot(path=str(ARTIFACTS / "edited_downloads.png"), full_page=True)
    page.locator(".brats-edit-tool button", has_text="View").first.click()


def _check_quick_prediction(page) -> None:
    """The bundled card turns test-time flips on; "Quick prediction" skips them; the page stays put."""
    predict = _predict_locator(page)
    # The bundled card turns test-time flips on; "Quick prediction" skips them for a faster look.
    quick = page.locator(".brats-quick input[type=checkbox]").first
    from brats_seg.card import default_model_dir

    bundled_flips = json.loads((default_model_dir() / "model.json").read_text())["tta_flips"]
    assert quick.is_visible() == bundled_flips
    if bundled_flips:
        label = page.inner_text(".brats-progress-label")
        quick.check()
        t2 = time.perf_counter()
        predict.click()
        before_again = page.evaluate(REVIEW_TOP)
        page.wait_for_function(
            "(b) => { const l = document.querySelector('.brats-progress-label');"
            " return l && l.innerText.startsWith('Done') && l.innerText !== b; }",
            arg=label,
            timeout=300_000,
        )
        print(f"Predict to overlay, quick (no flips): {time.perf_counter() - t2:.1f} s")
        assert "WT" in page.inner_text(".brats-volumes")
        # the second prediction of the same study leaves the page where it was
        again = settled_review_top(page)
        print(
            f"review section top: {before_again['top']:.0f} px before the second Predict, "
            f"{again['top']:.0f} px after"
        )
        assert before_again["top"] > 0.2 * before_again["height"], before_again  # scrolling would show
        assert abs(again["top"] - before_again["top"]) < 40, (before_again, again)


def _check_dicom_zip(page, brats_case: Path, tmp_path: Path) -> None:
    """The same case as a zip of four DICOM series: listed with their sequences, a DICOM SEG offered."""
    predict = _predict_locator(page)
    # The same case as a zip of four DICOM series (one folder per series, as a PACS exports them):
    # the series are listed with their detected sequence, and a DICOM SEG is offered for download.
    dicom_zip = dicom_zip_of(brats_case, tmp_path)
    with page.expect_file_chooser() as fc:
        page.click(".brats-upload")
    fc.value.set_files([str(dicom_zip)])
    page.wait_for_function(
        "() => { const b = document.querySelector('.brats-predict button, button.brats-predict');"
        " const f = document.querySelector('.brats-files');"
        " return b && !b.disabled && f && f.innerText.includes('AX T1 POST GD'); }",
        timeout=120_000,
    )
    listing = page.inner_text(".brats-files")
    assert "series 2 'AX T1 POST GD' (155 files)" in listing and "detected: T1CE" in listing, listing
    page.evaluate("() => document.querySelector('.brats-app').scrollIntoView({block: 'start'})")
    t3 = time.perf_counter()
    predict.click()
    page.wait_for_selector("a.brats-download-dicom-seg", timeout=300_000)
    print(f"DICOM zip: Predict to DICOM SEG link: {time.perf_counter() - t3:.1f} s")
    page.wait_for_function(REVIEW_AT_TOP, timeout=15_000)  # a new study: scrolled to its review again
    print(f"review section top after the DICOM study's Predict: {settled_review_top(page)['top']:.0f} px")
    page.screenshot(path=str(ARTIFACTS / "dicom_predicted.png"), full_page=True)
    assert "WT" in page.inner_text(".brats-volumes")
    assert f"{brats_case.name}_seg.dcm" in page.inner_html(".brats-downloads")


def _check_bad_file(page, files: list[str], tmp_path: Path) -> None:
    """A truncated file: a message naming it, no traceback."""
    broken = tmp_path / "broken_t1.nii.gz"
    broken.write_bytes(Path(files[0]).read_bytes()[:5000])
    with page.expect_file_chooser() as fc:
        page.click(".brats-upload")
    fc.value.set_files([str(broken), *files[1:]])
    page.wait_for_selector(".brats-message .brats-msg-error", timeout=60_000)
    message = page.inner_text(".brats-message")
    page.screenshot(path=str(ARTIFACTS / "bad_upload.png"), full_page=True)
    assert "broken_t1.nii.gz" in message
    assert "Traceback" not in page.content()


def test_upload_predict_review_and_bad_file(voila_url: str, brats_case: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    files = sorted(str(p) for p in brats_case.glob("*.nii.gz") if not p.name.endswith("_seg.nii.gz"))
    assert len(files) == 4
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        t0 = time.perf_counter()
        page.goto(voila_url, timeout=120_000)
        page.wait_for_selector(".brats-upload", timeout=120_000)
        print(f"\npage to usable widgets: {time.perf_counter() - t0:.1f} s")

        _upload_and_predict(page, files)
        _check_numbers_and_model_line(page)
        _check_slider_overlay_and_click(page)
        _check_editing(page)
        _check_quick_prediction(page)
        _check_dicom_zip(page, brats_case, tmp_path)
        _check_bad_file(page, files, tmp_path)
        browser.close()


def raw_study_files(shared_data: Path) -> list[str]:
    folder = shared_data / "raw" / "TCGA-FG-6692"
    if not folder.is_dir():
        pytest.skip(f"raw study not found at {folder}")
    return sorted(str(p) for p in folder.glob("*.nii.gz"))


def _check_raw_loaded(page, files: list[str]) -> None:
    """The raw study is preprocessed on upload: sequences detected, the section says what was done."""
    t0 = time.perf_counter()
    with page.expect_file_chooser() as fc:
        page.click(".brats-upload")
    fc.value.set_files(files)
    page.wait_for_function(
        "() => { const b = document.querySelector('.brats-predict button, button.brats-predict');"
        " return b && !b.disabled; }",
        timeout=300_000,
    )
    seconds = time.perf_counter() - t0
    print(f"\nraw study: upload to Predict enabled (preprocessing included): {seconds:.1f} s")
    listing = page.inner_text(".brats-files")
    assert all(f"detected: {m}" in listing for m in ("T1", "T1CE", "T2", "FLAIR")), listing
    summary = page.inner_text(".brats-harmonise-summary")
    assert "Raw study, preprocessed" in summary and "not skull-stripped" in summary, summary
    assert "mutual information as scanned" in summary and "FLAIR" in summary
    label = page.inner_text(".brats-progress-label")
    assert label.startswith("Preprocessed in"), label
    assert "skull strip" in label and "register FLAIR" in label, label
    check = page.locator(".brats-registration-check").first
    check.scroll_into_view_if_needed()
    check.screenshot(path=str(ARTIFACTS / "raw_registration_check.png"))
    page.screenshot(path=str(ARTIFACTS / "raw_loaded.png"), full_page=True)


def _check_raw_predicted(page) -> None:
    """Predict shows the labels on the native grid and offers the harmonisation's files."""
    t1 = time.perf_counter()
    page.locator(".brats-predict button, button.brats-predict").first.click()
    page.wait_for_selector(".brats-native-labels", state="visible", timeout=300_000)
    print(f"raw study: Predict to labels on the native grid: {time.perf_counter() - t1:.1f} s")
    native = page.locator(".brats-native-labels").first
    native.scroll_into_view_if_needed()
    native.screenshot(path=str(ARTIFACTS / "raw_native_labels.png"))
    page.screenshot(path=str(ARTIFACTS / "raw_predicted.png"), full_page=True)
    downloads = page.inner_html(".brats-downloads")
    assert "_seg_1mm.nii.gz" in downloads and "_registration.png" in downloads
    assert "_native.png" in downloads
    table = page.inner_text(".brats-volumes")
    wt = re.search(r"WT\s+whole tumour\s+(\d+\.\d+)", table)
    assert wt and float(wt[1]) > 5.0, table  # the lesion the labels show is several mL


def _check_unregistrable_flair(page, files: list[str], brats_case: Path, tmp_path: Path) -> None:
    """A FLAIR that cannot be registered is refused by name; the kernel keeps serving."""
    import nibabel as nib
    import numpy as np

    # A FLAIR that cannot be registered (noise on the FLAIR's own grid): refused, naming the file and
    # the metric
    flair = next(f for f in files if f.endswith("_fla.nii.gz"))
    image = nib.load(flair)
    noise = np.random.default_rng(0).uniform(0, 1000, image.shape).astype(np.float32)
    bad = tmp_path / Path(flair).name
    nib.save(nib.Nifti1Image(noise, image.affine), bad)
    with page.expect_file_chooser() as fc:
        page.click(".brats-upload")
    fc.value.set_files([*(f for f in files if f != flair), str(bad)])
    page.wait_for_selector(".brats-message .brats-msg-error", timeout=300_000)
    message = page.inner_text(".brats-message")
    page.screenshot(path=str(ARTIFACTS / "raw_bad_flair.png"), full_page=True)
    assert Path(flair).name in message and "did not converge" in message
    assert "mutual information" in message
    assert "Traceback" not in page.content()
    # the kernel keeps serving: the next study loads
    with page.expect_file_chooser() as fc:
        page.click(".brats-upload")
    fc.value.set_files(
        sorted(str(p) for p in brats_case.glob("*.nii.gz") if not p.name.endswith("_seg.nii.gz"))
    )
    page.wait_for_function(
        "() => { const b = document.querySelector('.brats-predict button, button.brats-predict');"
        " return b && !b.disabled; }",
        timeout=120_000,
    )
    assert page.locator(".brats-harmonise").first.is_hidden()


def test_raw_study_is_preprocessed_checked_and_labelled_on_its_native_grid(
    voila_url: str, shared_data: Path, brats_case: Path, tmp_path: Path
) -> None:
    """The real raw study TCGA-FG-6692 (skull on, three grids, 5.5 mm slices, scanner names), no mapping
    given."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    files = raw_study_files(shared_data)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(voila_url, timeout=120_000)
        page.wait_for_selector(".brats-upload", timeout=120_000)
        _check_raw_loaded(page, files)
        _check_raw_predicted(page)
        _check_unregistrable_flair(page, files, brats_case, tmp_path)
        browser.close()
