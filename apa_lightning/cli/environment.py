"""Whether this Python has the package's dependencies, and how to reach the project's virtual environment if not;
whether they work together is ``install_check``'s question.

Standard library only at import: it runs before anything of the dependencies is imported.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from pathlib import Path

REQUIRED = ("hydra", "omegaconf", "torch", "lightning")  # what every command needs first
VENV = Path(__file__).resolve().parents[1] / ".venv"  # where `make install` puts it (an editable install)
LOCK = "requirements/lock.txt"  # the versions the test suite passed with; `make install` installs them


def reinstall() -> str:
    """How to reinstall the tested versions into this Python's venv (the project's .venv or a ``VENV=`` one)."""
    venv = Path(sys.prefix).resolve()
    make = "make install" if venv == VENV.resolve() else f"make install VENV={venv}"
    return (
        f"reinstall the tested versions with `rm -rf {venv} && {make}` in {VENV.parent} (they are listed in {LOCK}; "
        "with TORCH_INDEX=..., torch and torchvision must both come from that index: when it cannot be reached, "
        "leave TORCH_INDEX out)"
    )


def _installed_here() -> bool:
    """Whether apa_lightning is installed into this Python's own environment (its site-packages, not a source
    tree on the path): a missing library is then a broken install of it."""
    prefix = Path(sys.prefix).resolve()
    found = importlib.metadata.distributions(name="apa-lightning")
    return any(Path(d.locate_file("")).resolve().is_relative_to(prefix) for d in found)


def missing_dependency() -> str | None:
    """The first module of ``REQUIRED`` this Python cannot import, or None."""
    return next((name for name in REQUIRED if importlib.util.find_spec(name) is None), None)


def missing_dependency_message(name: str) -> str:
    """One sentence: which module this Python lacks and how to run with the project's virtual environment."""
    if _installed_here():
        return (
            f"apa_lightning needs {name}, which {sys.executable} does not have: the install in {sys.prefix} is "
            f"incomplete; {reinstall()}"
        )
    python = VENV / "bin" / "python"
    if python.is_file():
        use = f"source {VENV}/bin/activate first, or run {python} -m apa_lightning ..."
    else:
        use = f"create it with `make install` in {VENV.parent}, then source .venv/bin/activate"
    return f"apa_lightning needs {name}, which {sys.executable} does not have: use the project's .venv ({use})"


def check_dependencies() -> None:
    """Stop when a required module is missing: ``python -m apa_lightning`` (argv[0] is ``-m`` while the package is
    imported) exits with one ``error:`` line, an import elsewhere raises ModuleNotFoundError with the same text."""
    name = missing_dependency()
    if name is None:
        return
    if sys.argv[:1] == ["-m"]:
        raise SystemExit(f"error: {missing_dependency_message(name)}")
    raise ModuleNotFoundError(missing_dependency_message(name), name=name)
