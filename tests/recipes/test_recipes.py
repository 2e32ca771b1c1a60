"""Every recipe runs: the scripts exit 0 (they assert their own claims), the test files pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.systemd

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
SCRIPTS = sorted(p.name for p in RECIPES.glob("*.py") if not p.name.startswith("test_"))
TEST_FILES = sorted(p.name for p in RECIPES.glob("test_*.py"))

#: What each script prints when it got to the end (its own asserts passed).
LAST_WORDS = {
    "untrusted_code.py": "all submissions handled safely",
    "parse_uploads.py": "all uploads parsed in the sandbox",
    "cpu_capped_batch.py": "batch done; the unit is gone",
    "per_tenant.py": "none sees another's data",
    "dask_cluster.py": "unit(s) on 2 workers",
    "seed_example.py": "bootstrap unit sandboxed-",
}


def test_there_are_at_least_six_recipes() -> None:
    assert len(SCRIPTS) + len(TEST_FILES) >= 6
    assert set(SCRIPTS) == set(LAST_WORDS), "add the new recipe's last words to LAST_WORDS"


@pytest.mark.parametrize("script", SCRIPTS)
def test_recipe_script_runs_to_the_end(systemd: object, script: str) -> None:
    r = subprocess.run(
        [sys.executable, str(RECIPES / script)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=RECIPES.parent,
    )
    assert r.returncode == 0, f"{script} failed:\n{r.stdout}\n{r.stderr}"
    assert LAST_WORDS[script] in r.stdout, r.stdout


@pytest.mark.parametrize("test_file", TEST_FILES)
def test_recipe_test_file_passes_under_pytest(systemd: object, test_file: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(RECIPES / test_file)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=RECIPES.parent,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert " passed" in r.stdout and "failed" not in r.stdout
