"""PGQML_IMPL picks the implementation; forcing a missing one says what to do."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import sys
if {block}:
    sys.modules["pgqml._speedups"] = None  # as if the extension was never built
import pgqml
print(pgqml.__impl__)
"""


def probe(impl: str | None, block: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PGQML_IMPL"}
    if impl is not None:
        env["PGQML_IMPL"] = impl
    return subprocess.run(
        [sys.executable, "-c", PROBE.format(block=block)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_python_selects_the_twin():
    out = probe("python", block=False)
    assert out.stdout.strip() == "python", out.stderr


def test_missing_compiled_module_falls_back_when_not_forced():
    out = probe(None, block=True)
    assert out.stdout.strip() == "python", out.stderr


def test_forcing_c_without_the_module_explains_the_fix():
    out = probe("c", block=True)
    assert out.returncode != 0
    assert "ConfigurationError" in out.stderr
    assert "PGQML_IMPL=c" in out.stderr and "pip install" in out.stderr


def test_bad_impl_value_is_rejected():
    out = probe("rust", block=False)
    assert out.returncode != 0 and "PGQML_IMPL='rust' is not valid" in out.stderr


@pytest.mark.skipif(os.environ.get("PGQML_IMPL") == "python", reason="pure-Python CI pass")
def test_compiled_module_is_built_and_selected_by_default():
    out = probe(None, block=False)
    assert out.stdout.strip() == "c", out.stderr
