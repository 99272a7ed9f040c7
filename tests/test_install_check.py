"""``make install`` proves the environment (``python -m apa_lightning.cli.install_check``), and a run that fails at
start-up from a broken install says so in one ``error:`` paragraph with the versions and the fix."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
import torchvision

from apa_lightning.cli import environment, install_check

REPO = Path(__file__).resolve().parents[1]
MISSING_OP = "operator torchvision::nms does not exist"  # what torchvision built for another torch raises

# Loaded by every Python started with this folder on PYTHONPATH: torchvision breaks as with a torch it was not built
# for. BROKEN=import: `import torchvision` raises (the real failure); BROKEN=op: it imports, its nms raises.
SHIM = f"""
import importlib.abc, importlib.util, os, sys

class BrokenTorchvision(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "torchvision":
            return None
        if os.environ["BROKEN"] == "import":
            raise RuntimeError("{MISSING_OP}")
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)

            def nms(*args, **kwargs):
                raise RuntimeError("{MISSING_OP}")

            module.ops.nms = nms

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, BrokenTorchvision())
"""


def broken_python(tmp_path: Path, mode: str) -> dict[str, str]:
    """The environment of a subprocess whose torchvision is broken (``mode``: import or op)."""
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(textwrap.dedent(SHIM))
    return {**os.environ, "PYTHONPATH": str(shim), "BROKEN": mode, "YOLO_CONFIG_DIR": str(tmp_path / "yolo")}


def test_a_working_environment_has_no_problems_and_the_check_names_the_versions(capsys):
    assert install_check.problems() == []
    assert install_check.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Environment works: ")
    assert f"torch {metadata.version('torch')}, torchvision {metadata.version('torchvision')}" in out
    assert f"lightning {metadata.version('lightning')}" in out and "ultralytics " in out


def test_a_torchvision_operator_that_does_not_run_fails_the_check_with_the_versions_and_the_fix(monkeypatch, capsys):
    def nms(*args, **kwargs):
        raise RuntimeError(MISSING_OP)

    monkeypatch.setattr(torchvision.ops, "nms", nms)
    assert install_check.main([]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: the installed libraries do not work together")
    assert f"torchvision.ops.nms: RuntimeError: {MISSING_OP}" in err
    assert f"torch {metadata.version('torch')}, torchvision {metadata.version('torchvision')}" in err
    assert f"`rm -rf {Path(sys.prefix).resolve()} && make install" in err and environment.LOCK in err


def test_a_library_that_does_not_import_is_named(monkeypatch):
    real = importlib.import_module

    def import_module(name, *args):
        if name == "ultralytics":
            raise ImportError("cannot import name 'check_amp' from 'ultralytics.utils'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", import_module)
    assert install_check.problems() == [
        "import ultralytics: ImportError: cannot import name 'check_amp' from 'ultralytics.utils'"
    ]


def test_only_errors_a_broken_install_raises_are_looked_into(monkeypatch):
    monkeypatch.setattr(install_check, "problems", lambda: ["import torch: OSError: libtorch_cpu.so"])
    assert install_check.broken_install(ValueError("a bug")) is None
    assert "import torch: OSError: libtorch_cpu.so" in install_check.broken_install(RuntimeError("x"))
    monkeypatch.setattr(install_check, "problems", lambda: [])
    assert install_check.broken_install(RuntimeError("a bug in a working environment")) is None


@pytest.mark.slow
def test_the_check_script_fails_on_a_torchvision_whose_operators_do_not_load(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "apa_lightning.cli.install_check"],
        cwd=REPO,
        env=broken_python(tmp_path, "op"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: the installed libraries do not work together (torchvision.ops.nms: ")
    assert MISSING_OP in done.stderr and f"torchvision {metadata.version('torchvision')}" in done.stderr


@pytest.mark.slow
def test_a_run_on_a_broken_install_ends_with_one_error_paragraph_not_a_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "apa_lightning", "trainer.max_epochs=1", f"paths.root_dir={tmp_path}"],
        cwd=REPO,
        env=broken_python(tmp_path, "import"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().split("\n\n")[-1]
    assert last.startswith("error: the installed libraries do not work together (import torchvision: RuntimeError: ")
    assert MISSING_OP in last and "\n" not in last
    assert f"torch {metadata.version('torch')}, torchvision {metadata.version('torchvision')}" in last
    assert "make install" in last


def test_a_library_missing_from_the_installed_venv_is_a_broken_install_with_the_reinstall_command(monkeypatch):
    # this Python has apa_lightning installed (make install): a missing library means the install is incomplete
    monkeypatch.setattr(environment, "REQUIRED", ("hydra", "no_such_module_xyz"))
    monkeypatch.setattr(sys, "argv", ["-m"])
    with pytest.raises(SystemExit) as raised:
        environment.check_dependencies()
    message = str(raised.value.code)
    assert message.startswith(f"error: apa_lightning needs no_such_module_xyz, which {sys.executable} does not have")
    assert f"the install in {sys.prefix} is incomplete" in message
    assert f"`rm -rf {Path(sys.prefix).resolve()} && make install" in message and environment.LOCK in message
