"""A lab on JupyterHub (``deploy/jupyterhub/``): three people at once, each on a server of their own.

Real parts throughout: JupyterHub with configurable-http-proxy on loopback ports, the deployment's
``jupyterhub_config.py`` (loaded as is; the test overrides only the authenticator, the spawner, the ports
and the culler's timeout), its idle culler as a hub service, Voila's server extension in each user's
``jupyterhub-singleuser``, and Debian's chromium driven by Playwright (never ``playwright install``).

Three people log in with a shared password (``SharedPasswordAuthenticator``, JupyterHub's successor to
``DummyAuthenticator(password=...)``); ``SimpleLocalProcessSpawner`` runs their servers as the hub's
user with homes in a temporary folder, so no system users are made. Each uploads a different real BraTS
case with its ground truth and predicts: each page must show its own study and volumes, never another's.
Printed: each prediction's time (alone, and two at once through the shared queue of
``BRATS_SEG_CONCURRENT_JOBS``), and how fast the first person's dashboard answers while the others
predict. Then two people close their pages; the culler must stop their servers (asserted through the
hub's REST API) and leave the third person's, whose page is still open.

``BRATS_SEG_CONCURRENT_JOBS=3 pytest -s tests/test_jupyterhub.py`` measures the same without the queue.
Skipped with a reason when chromium, JupyterHub, the culler, configurable-http-proxy or the data are absent.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "jupyterhub"
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts" / "jupyterhub"
#: Each person and the real case they predict (three different cases, with ground truth).
CASES = {"ana": "Brats18_CBICA_ABM_1", "ben": "Brats18_TCIA02_135_1", "cy": "Brats18_2013_2_1"}
PASSWORD = "brats-lab-" + secrets.token_hex(8)
CULL_TIMEOUT_S, CULL_EVERY_S = 30, 10

pytestmark = [pytest.mark.browser, pytest.mark.data]

#: The test's hub config: the deployment's file, then what a test machine needs instead.
TEST_CONFIG = """
load_subconfig({deploy_config!r})
c.JupyterHub.bind_url = "http://127.0.0.1:{port}"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = {password!r}
c.Authenticator.allowed_users = {users!r}
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {homes!r} + "/{{username}}"
c.Spawner.environment["JUPYTER_CONFIG_PATH"] = {singleuser!r}
c.Spawner.args = ["--allow-root"] if {as_root!r} else []  # the servers run as the hub's user here
c.JupyterHub.last_activity_interval = 5
culler = next(s for s in c.JupyterHub.services if s["name"] == "idle-culler")
culler["command"][-2:] = ["--timeout={cull_timeout}", "--cull-every={cull_every}"]
c.JupyterHub.services.append({{"name": "test-observer", "api_token": {token!r}}})
c.JupyterHub.load_roles.append(
    {{"name": "test-observer", "scopes": ["list:users", "read:users", "read:servers"],
      "services": ["test-observer"]}}
)
"""


def missing_part() -> str | None:
    """Why the lab cannot be set up on this machine, or None."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not found (apt-get install chromium)"
    for module, install in [
        ("playwright", "pip install playwright"),
        ("jupyterhub", "pip install jupyterhub"),
        ("jupyterhub_idle_culler", "pip install jupyterhub-idle-culler"),
    ]:
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed ({install})"
    if shutil.which("configurable-http-proxy") is None:
        return "configurable-http-proxy not on PATH (npm install -g configurable-http-proxy@5.3.0)"
    if not (ROOT / "model" / "model.json").is_file():
        return "no bundled model in model/"
    return None


@dataclass
class Hub:
    """A running hub: its public address and a token that may read users and their servers."""

    url: str
    token: str
    log: Path

    def api(self, path: str) -> dict:
        request = urllib.request.Request(
            f"{self.url}/hub/api{path}", headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def running(self, name: str) -> bool:
        """Whether ``name``'s default server runs (or is starting), as the hub's REST API says."""
        model = self.api(f"/users/{name}")
        assert "servers" in model, f"the hub's user model lacks servers (the token's scopes?): {model}"
        return "" in model["servers"]

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def singleuser_config(folder: Path) -> Path:
    """The deployment's single-user settings, with websocket pings every 10 s (default 30 s).

    An open page pings through the proxy, which the hub counts as activity: 10 s pings keep a present
    person's server clear of the test's 30 s culler timeout.
    """
    config = json.loads((DEPLOY / "singleuser" / "jupyter_server_config.json").read_text())
    config["ServerApp"]["tornado_settings"]["ws_ping_interval"] = 10_000
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "jupyter_server_config.json").write_text(json.dumps(config, indent=2))
    return folder


def write_test_config(tmp: Path, token: str) -> tuple[Path, int]:
    """The hub config for this test in ``tmp``; returns it and the public port."""
    from helpers import free_port

    port = free_port()
    text = TEST_CONFIG.format(
        deploy_config=str(DEPLOY / "jupyterhub_config.py"),
        port=port,
        hub_port=free_port(),
        api_port=free_port(),
        password=PASSWORD,
        users=set(CASES),
        homes=str(tmp / "home"),
        singleuser=str(singleuser_config(tmp / "singleuser")),
        cull_timeout=CULL_TIMEOUT_S,
        cull_every=CULL_EVERY_S,
        token=token,
        as_root=os.geteuid() == 0,
    )
    path = tmp / "jupyterhub_config.py"
    path.write_text(text)
    return path, port


def wait_for_hub(hub: Hub, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"JupyterHub exited with code {process.returncode}:\n{hub.log_tail()}")
        with contextlib.suppress(OSError, urllib.error.URLError):
            hub.api("/")
            return
        time.sleep(0.5)
    raise AssertionError(
        f"JupyterHub did not answer at {hub.url}/hub/api in {timeout:.0f} s:\n{hub.log_tail()}"
    )


@contextlib.contextmanager
def running_hub(tmp: Path, env: dict[str, str]) -> Iterator[Hub]:
    """``jupyterhub -f`` the test config in ``tmp`` (its database, cookie secret, proxy pid file there)."""
    token = secrets.token_hex(24)
    config, port = write_test_config(tmp, token)
    hub = Hub(f"http://127.0.0.1:{port}", token, tmp / "jupyterhub.log")
    with open(hub.log, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(config)],
            cwd=tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            wait_for_hub(hub, process)
            yield hub
        finally:
            process.terminate()  # the hub stops the users' servers, the culler and the proxy
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def convert_networks_once(env: dict[str, str]) -> float:
    """What an admin runs once: the model's networks converted into the shared cache. Returns seconds."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "from brats_seg.model import load_model; load_model(backend=None)"],
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


@pytest.fixture(scope="module")
def lab_hub(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Iterator[Hub]:
    reason = missing_part()
    if reason:
        pytest.skip(reason)
    for case in CASES.values():
        if not (shared_data / "brats" / case).is_dir():
            pytest.skip(f"BraTS case {case} not found in {shared_data / 'brats'}")
    tmp = tmp_path_factory.mktemp("hub")
    shared = tmp / "shared"
    env = {
        **os.environ,
        "BRATS_SEG_SHARED_DIR": str(shared),
        "BRATS_SEG_CACHE": os.environ.get("BRATS_SEG_CACHE") or str(shared / "cache"),
    }
    print(f"\nnetworks converted into the shared cache in {convert_networks_once(env):.1f} s")
    with running_hub(tmp, env) as hub:
        yield hub


# ---- one person in the browser ------------------------------------------------------------------------

PREDICT_ENABLED = (
    "() => { const b = document.querySelector('.brats-predict button, button.brats-predict');"
    " return b && !b.disabled; }"
)
LABEL = "() => { const l = document.querySelector('.brats-progress-label'); return l ? l.innerText : ''; }"


def log_in(browser, hub: Hub, name: str):
    """A fresh browser context (cookies of its own) logs ``name`` in; returns the dashboard's page once
    its model is ready. The hub spawns the server; its default URL is the dashboard."""
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    start = time.perf_counter()
    page.goto(f"{hub.url}/hub/login", timeout=60_000)
    page.fill("#username_input", name)
    page.fill("#password_input", PASSWORD)
    page.click("#login_submit")
    page.wait_for_selector(".brats-upload", timeout=180_000)
    assert f"/user/{name}/voila/render/app.ipynb" in page.url, page.url
    page.wait_for_function(
        "() => { const s = document.querySelector('.brats-model-status');"
        " return s && s.innerText.includes('ready'); }",
        timeout=180_000,
    )
    print(f"{name}: login to a ready dashboard (spawn included) {time.perf_counter() - start:.1f} s")
    page.click(".brats-model-status summary")
    status = page.inner_text(".brats-model-status")
    assert "1 CPU thread(s)" in status, (
        f"{name}: expected one thread per kernel, the model line says {status!r}"
    )
    return page


def upload_case(page, case: Path) -> None:
    """The case's four sequences and its ground truth, in one upload; waits until Predict is enabled."""
    with page.expect_file_chooser() as chooser:
        page.click(".brats-upload")
    chooser.value.set_files(sorted(str(p) for p in case.glob("*.nii.gz")))
    page.wait_for_function(PREDICT_ENABLED, timeout=120_000)


def press_predict(page) -> str:
    """Press Predict; returns the progress label as it was before."""
    before = page.evaluate(LABEL)
    page.locator(".brats-predict button, button.brats-predict").first.click()
    return before


def is_done(page, before: str) -> bool:
    label = page.evaluate(LABEL)
    return label.startswith("Done in") and label != before


def done_figures(page) -> dict[str, float]:
    """The seconds the dashboard reports: ``total``, ``waited`` (for other sessions) and ``network``."""
    label = page.evaluate(LABEL)
    total = re.search(r"Done in (\d+\.\d) s", label)
    network = re.search(r"network (\d+\.\d) s", label)
    assert total and network, f"unexpected progress label after Predict: {label!r}"
    waited = re.search(r"waited (\d+\.\d) s for other sessions", label)
    print(f"  {label}")
    return {
        "total": float(total[1]),
        "waited": float(waited[1]) if waited else 0.0,
        "network": float(network[1]),
    }


def slider_step(page, key: str) -> float:
    """Step the axial slider by one slice; returns the seconds until the kernel's redrawn view arrives."""
    before = page.locator(".brats-view-axial").first.get_attribute("src")
    page.locator(".brats-slider-axial .ui-slider-handle, .brats-slider-axial [role=slider]").first.focus()
    start = time.perf_counter()
    page.keyboard.press(key)
    page.wait_for_function(
        "(b) => { const i = document.querySelector('.brats-view-axial');"
        " return i && i.getAttribute('src') !== b; }",
        arg=before,
        timeout=60_000,
    )
    return time.perf_counter() - start


def check_own_result(page, name: str, case: Path) -> None:
    """The page shows ``case`` with its own ground truth volume and a good Dice, and no other case."""
    import nibabel as nib
    import numpy as np

    message = page.inner_text(".brats-message")
    assert f"{case.name}: whole tumour" in message, f"{name}'s page: expected {case.name}, found {message!r}"
    text = page.inner_text("body")
    others = [other for other in CASES.values() if other != case.name and other in text]
    assert not others, f"{name}'s page shows another person's study: {others}"
    seg = np.asanyarray(nib.load(case / f"{case.name}_seg.nii.gz").dataobj)
    truth_ml = float((seg > 0).sum()) / 1000.0  # 1 mm voxels
    shown = page.evaluate(
        "() => parseFloat(document.querySelector("
        "'.brats-volumes tr[data-row=\"WT\"] [data-col=\"truth\"]').getAttribute('data-value'))"
    )
    assert abs(shown - truth_ml) < 1e-3, f"{name}: WT truth shown {shown} mL, {case.name} has {truth_ml} mL"
    dice = page.evaluate(
        "() => parseFloat(document.querySelector("
        "'.brats-metrics tr[data-row=\"WT\"] [data-col=\"dice\"]').getAttribute('data-value'))"
    )
    assert dice > 0.8, f"{name}: WT Dice {dice:.3f} on {case.name}"
    print(f"{name}: {case.name}, WT truth {truth_ml:.1f} mL, Dice WT {dice:.3f}")


# ---- the phases ---------------------------------------------------------------------------------------


def predict_alone(page, name: str) -> dict[str, float]:
    before = press_predict(page)
    page.wait_for_function(
        f"(b) => {{ const l = ({LABEL})(); return l.startsWith('Done in') && l !== b; }}",
        arg=before,
        timeout=300_000,
    )
    figures = done_figures(page)
    print(f"{name}: Predict alone: {figures['total']:.1f} s (network {figures['network']:.1f} s)")
    return figures


def idle_slider(page, steps: int = 5) -> list[float]:
    return [slider_step(page, "ArrowUp" if i % 2 else "ArrowDown") for i in range(steps)]


def predict_two_while_stepping(prober, pages: dict[str, object], timeout: float = 300.0) -> list[float]:
    """Press Predict on ``pages`` at once; ``prober`` steps its slider until both are done.

    Returns the prober's step latencies measured while at least one prediction ran.
    """
    before = {name: press_predict(page) for name, page in pages.items()}
    latencies, deadline, step = [], time.time() + timeout, 0
    while not all(is_done(page, before[name]) for name, page in pages.items()):
        assert time.time() < deadline, f"predictions not done in {timeout:.0f} s"
        latencies.append(slider_step(prober, "ArrowUp" if step % 2 else "ArrowDown"))
        step += 1
        time.sleep(0.3)
    return latencies


def wait_culled(hub: Hub, names: list[str], since: float) -> dict[str, float]:
    """Seconds from ``since`` until the hub says each server in ``names`` is gone."""
    gone: dict[str, float] = {}
    deadline = since + CULL_TIMEOUT_S + 3 * CULL_EVERY_S + 30
    while len(gone) < len(names):
        assert time.time() < deadline, (
            f"servers of {sorted(set(names) - set(gone))} still running {time.time() - since:.0f} s "
            f"after they left (culler --timeout={CULL_TIMEOUT_S} --cull-every={CULL_EVERY_S}):\n"
            + hub.log_tail()
        )
        for name in names:
            if name not in gone and not hub.running(name):
                gone[name] = time.time() - since
        time.sleep(1)
    return gone


def print_starvation(alone: dict, idle: list[float], loaded: list[float], together: dict) -> None:
    jobs = os.environ.get("BRATS_SEG_CONCURRENT_JOBS") or f"default ({max(1, (os.cpu_count() or 2) // 2)})"
    print(f"--- starvation on {os.cpu_count()} cores, BRATS_SEG_CONCURRENT_JOBS={jobs}, 1 thread per kernel")
    print(f"prediction alone: {alone['total']:.1f} s (network {alone['network']:.1f} s)")
    for name, f in together.items():
        print(
            f"prediction of {name} beside another: {f['total']:.1f} s "
            f"(waited {f['waited']:.1f} s in the queue, network {f['network']:.1f} s)"
        )
    print(
        f"ana's slider step, server idle: median {statistics.median(idle) * 1000:.0f} ms "
        f"(max {max(idle) * 1000:.0f}); while ben and cy predict: median "
        f"{statistics.median(loaded) * 1000:.0f} ms (max {max(loaded) * 1000:.0f}, {len(loaded)} steps)"
    )


def test_three_people_predict_at_once_and_the_culler_stops_who_left(lab_hub: Hub, shared_data: Path) -> None:
    from helpers import kernel_rss_mb
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    cases = {name: shared_data / "brats" / case for name, case in CASES.items()}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
        )
        # ana alone on the server: her prediction and her dashboard's answers set the baseline
        pages = {"ana": log_in(browser, lab_hub, "ana")}
        upload_case(pages["ana"], cases["ana"])
        alone = predict_alone(pages["ana"], "ana")
        idle = idle_slider(pages["ana"])
        # ben and cy arrive and predict at once; ana keeps reviewing her study meanwhile
        for name in ("ben", "cy"):
            pages[name] = log_in(browser, lab_hub, name)
            upload_case(pages[name], cases[name])
        loaded = predict_two_while_stepping(pages["ana"], {n: pages[n] for n in ("ben", "cy")})
        together = {name: done_figures(pages[name]) for name in ("ben", "cy")}
        print_starvation(alone, idle, loaded, together)
        print(f"kernels' resident memory: {', '.join(f'{mb:.0f} MB' for mb in kernel_rss_mb(ROOT))}")
        for name, page in pages.items():
            page.wait_for_selector(".brats-volumes table", timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
            check_own_result(page, name, cases[name])

        # ana and ben leave (close their pages); cy stays with her page open
        left = time.time()
        for name in ("ana", "ben"):
            pages.pop(name).context.close()
        culled = wait_culled(lab_hub, ["ana", "ben"], left)
        print(", ".join(f"{name}'s server culled {s:.0f} s after leaving" for name, s in culled.items()))
        assert lab_hub.running("cy"), f"cy's server was culled with her page open:\n{lab_hub.log_tail()}"
        assert slider_step(pages["cy"], "ArrowUp") < 30  # and her dashboard still answers
        browser.close()
