"""Repository basics: the README's commands, CI, lint, the repository's files, and no real data in it."""

from __future__ import annotations

import ast
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
    command = [ruff, "check", "."]  # pyproject.toml's rules: line length and complexity included
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    formatted = subprocess.run([ruff, "format", "--check", "."], cwd=ROOT, capture_output=True, text=True)
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


PACKAGE = ROOT / "brats_seg"
#: The shape the package keeps (issue 20): functions within 60 lines (docstrings included) and modules
#: within about 600 lines.
MAX_FUNCTION_LINES, MAX_MODULE_LINES = 60, 620


def _modules() -> dict[str, Path]:
    mods = {
        p.relative_to(ROOT).with_suffix("").as_posix().replace("/", "."): p for p in PACKAGE.rglob("*.py")
    }
    return {name.removesuffix(".__init__"): path for name, path in mods.items()}


def test_functions_and_modules_stay_small() -> None:
    long_functions, long_modules = [], []
    for name, path in _modules().items():
        source = path.read_text()
        if len(source.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(f"{name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long_functions.append(f"{name}.{node.name}: {lines} lines")
    assert long_functions == [] and long_modules == []


def _imports(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``name`` imports, deferred imports included."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            for alias in node.names:  # a submodule where one is named, else the module imported from
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
    return (found & modules) - {name}


def test_the_package_has_no_import_cycle() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        seen = set()
        while stack:
            node, path = stack.pop()
            for dep in graph[node]:
                if dep == start:
                    return [*path, dep]
                if dep not in seen:
                    seen.add(dep)
                    stack.append((dep, [*path, dep]))
        return None

    assert [cycle for name in graph if (cycle := cycle_from(name))] == []
