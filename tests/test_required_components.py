"""Under CI a missing required component fails the run instead of turning its tests into skips."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
THIS_FILE = str(Path(__file__).resolve().relative_to(REPO))  # only collected by the child run


def run_pytest_with_broken_ray(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    """Collect this file in a child pytest where ``import ray`` raises ImportError."""
    shim = tmp_path / "shim"
    (shim / "ray").mkdir(parents=True)
    (shim / "ray" / "__init__.py").write_text(
        'raise ImportError("ray is broken on purpose by the test shim")\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(shim), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if ci is not None:
        env["CI"] = ci
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q"]
    return subprocess.run(
        [*command, THIS_FILE],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_missing_ray_fails_the_run_under_ci(tmp_path):
    result = run_pytest_with_broken_ray(tmp_path, ci="true")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "ray (the [ray] extra): ImportError: ray is broken on purpose" in output, output
    assert "pip install -e '.[ray,spark,dev]'" in output
    assert "pyspark (" not in output  # only what is really missing is named


def test_missing_ray_does_not_stop_a_local_run(tmp_path):
    result = run_pytest_with_broken_ray(tmp_path, ci=None)
    assert result.returncode == 0, result.stdout + result.stderr


def test_require_skips_locally_and_fails_under_ci(require, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"lvd_not_a_package.*\.\[ray,spark,dev\]"):
        require("lvd_not_a_package")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"lvd_not_a_package.*\.\[ray,spark,dev\]"):
        require("lvd_not_a_package")
    assert require("json").dumps([1]) == "[1]"  # present: the module itself
