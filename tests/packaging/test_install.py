"""The install command the docs show installs this project, from a built wheel, in a fresh venv.

``pip install sandboxed`` brings an unrelated project from the package index, so
the distribution has a name of its own; the import name and the command stay
``sandboxed``. The wheel is built as a user's ``pip`` would build it, and the
build must not print setuptools' deprecation warnings.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "docs" / "getting-started.md"]


def project() -> dict[str, str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return dict(tomllib.load(f)["project"])


def distribution_name() -> str:
    return project()["name"]


def install_commands(path: Path) -> list[str]:
    """The ``pip install ...`` lines of a document's console blocks (without the prompt)."""
    return [
        m.group(1).split("#")[0].strip()
        for m in re.finditer(r"^\$ (pip install [^\n]+)$", path.read_text(), re.M)
    ]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_show_the_install_command_of_this_distribution(doc: Path) -> None:
    commands = install_commands(doc)
    assert commands, f"{doc.name} shows no install command"
    for command in commands:
        assert command == f"pip install {distribution_name()}", command


def test_distribution_name_is_not_the_unrelated_sandboxed() -> None:
    # "sandboxed" on the package index is a "Sandbox/Virtual Machine detection" project.
    assert distribution_name() != "sandboxed"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return out, r.stdout + r.stderr


def test_building_the_wheel_prints_no_deprecation_warning(built: tuple[Path, str]) -> None:
    _, log = built
    assert "deprecated" not in log.lower(), log


def test_documented_install_command_installs_the_package_and_its_command(
    built: tuple[Path, str], tmp_path: Path
) -> None:
    wheels, _ = built
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    (command,) = set(install_commands(ROOT / "docs" / "getting-started.md"))
    # Exactly the documented command; the wheel directory stands in for the index.
    argv = [str(py), "-m", *command.split(), "--find-links", str(wheels)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    probe = (
        "import importlib.metadata as m, sandboxed; "
        "print(m.version('systemd-sandboxed'), sandboxed.sandboxed.__module__, "
        "sandboxed.__file__)"
    )
    r = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    version, module, where = r.stdout.split()
    assert version == project()["version"]
    assert module.startswith("sandboxed.")
    assert str(env_dir) in where  # the installed copy, not the source tree
    r = subprocess.run(
        [str(env_dir / "bin" / "sandboxed"), "--help"], capture_output=True, text=True
    )
    assert r.returncode == 0 and "doctor" in r.stdout, r.stdout + r.stderr
    # The pytest plugin's entry point comes with the wheel.
    r = subprocess.run(
        [
            str(py),
            "-c",
            "import importlib.metadata as m; "
            "print([e.value for e in m.entry_points(group='pytest11') if e.name == 'sandboxed'])",
        ],
        capture_output=True,
        text=True,
    )
    assert "sandboxed.pytest_plugin" in r.stdout, r.stdout + r.stderr
