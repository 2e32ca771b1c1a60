"""``launch.with_preload``: the supervisor's boot imports extra modules (pure logic)."""

from __future__ import annotations

from sandboxed.runtime.launch import with_preload


def fields(site_arg: str) -> list[str]:
    return bytes.fromhex(site_arg).decode().split("\0")


def test_no_preload_leaves_the_site_setup_as_it_is() -> None:
    site = "\0".join(["s", "import a_finder"]).encode().hex()
    assert with_preload(site, ()) == site


def test_preload_appends_one_import_line_per_module_after_the_pth_lines() -> None:
    site = "\0".join(["s", "import a_finder"]).encode().hex()
    out = fields(with_preload(site, ("pytest", "_pytest.assertion.rewrite")))
    assert out == ["s", "import a_finder", "import pytest", "import _pytest.assertion.rewrite"]


def test_a_name_that_is_not_a_dotted_module_name_is_dropped() -> None:
    site = b"".hex()
    out = fields(with_preload(site, ("os; import shutil", "ok.mod", "x\nimport y")))
    assert out == ["", "import ok.mod"]
