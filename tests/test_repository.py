"""Repository basics: the README's commands, CI, lint, the repository's files, and no real data in it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The commands of the README's first code block (comments dropped)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README.md must open with a bash code block holding the two commands"
    return [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_readme_opens_with_an_app_command_and_a_test_command() -> None:
    commands = readme_commands()
    assert len(commands) == 2
    installs = ("pip install -r requirements.txt", "pip install -q -r requirements.txt")
    assert all(any(install in c for install in installs) for c in commands)
    assert "pytest" in commands[1]


def test_readme_first_screen_holds_the_two_commands() -> None:
    """A newcomer sees what the tool is and both commands without scrolling (the first 40 lines)."""
    first_screen = "\n".join((ROOT / "README.md").read_text().splitlines()[:40])
    for command in readme_commands():
        assert command in first_screen, f"README.md: expected {command!r} within its first 40 lines"
    assert "voila app.ipynb" in readme_commands()[0]


@pytest.mark.parametrize("name", ["LICENSE", "CONTRIBUTING.md", "CHANGELOG.md", ".pre-commit-config.yaml"])
def test_repository_files_exist(name: str) -> None:
    path = ROOT / name
    assert path.is_file() and path.stat().st_size > 0, f"expected a non-empty {name} at the repository root"


def test_license_is_the_apache_text_pyproject_declares() -> None:
    assert 'license = "Apache-2.0"' in (ROOT / "pyproject.toml").read_text()
    text = (ROOT / "LICENSE").read_text()
    for phrase in ("Apache License", "Version 2.0, January 2004", "END OF TERMS AND CONDITIONS"):
        assert phrase in text, f"LICENSE: expected the Apache-2.0 text, found no {phrase!r}"


def test_pre_commit_pins_the_ruff_of_requirements() -> None:
    ruff = re.search(r"^ruff==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert ruff, "requirements.txt: expected a pinned ruff==VERSION"
    assert f"rev: v{ruff.group(1)}" in (ROOT / ".pre-commit-config.yaml").read_text()


def test_model_card_keeps_provenance_in_docs() -> None:
    """The runtime card stays small; each member's nested training record lives in docs/model/."""
    card_path = ROOT / "model" / "model.json"
    if not card_path.is_file():
        pytest.skip("no bundled model in model/")
    size = card_path.stat().st_size
    assert size < 64 * 2**10, f"model/model.json: expected under 64 KiB (history in docs/), found {size:,} B"
    card = json.loads(card_path.read_text())
    assert (ROOT / card["provenance"]["records"]).is_file() and (ROOT / card["provenance"]["docs"]).is_file()
    records = json.loads((ROOT / card["provenance"]["records"]).read_text())
    assert records["name"] == card["name"] and records["sha256"] == card["sha256"]
    assert set(records["members"]) == {member["file"] for member in card["members"]}


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert readme_commands()[1] in ci


def test_requirements_are_pinned_and_install_the_package() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert "-e ." in lines
    unpinned = [line for line in lines if line != "-e ." and "==" not in line]
    assert not unpinned, f"unpinned requirements: {unpinned}"


def test_no_real_brats_files_are_tracked() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    image = re.compile(r"(?i)brats[^/]*_(t1|t1ce|t2|flair|seg)\.nii(\.gz)?$|BraTS-GLI-")
    leaked = [f for f in listed.stdout.split() if image.search(f)]
    assert not leaked


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (pip install -r requirements.txt installs it)")
    command = [ruff, "check", "brats_seg", "tests", "benchmarks"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
