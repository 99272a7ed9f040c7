"""Whether the installed libraries work together: ``python -m apa_lightning.cli.install_check`` (``make install`` runs
it) imports each and runs one torchvision operator; a run that fails at start-up asks ``problems`` too, and a broken
install then gets one ``error:`` paragraph instead of a traceback."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys

from apa_lightning.cli.environment import reinstall

# what a run needs working: import name -> distribution name (whose version a broken install is reported with)
LIBRARIES = {
    "torch": "torch",
    "torchvision": "torchvision",
    "lightning": "lightning",
    "hydra": "hydra-core",
    "ultralytics": "ultralytics",
}


def versions() -> dict[str, str]:
    """The installed version of each of ``LIBRARIES``, by distribution name ("missing" for one not installed)."""
    found = {}
    for distribution in LIBRARIES.values():
        try:
            found[distribution] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            found[distribution] = "missing"
    return found


def _run_one_operator() -> None:
    """One torchvision operator on a tiny input: its compiled ops must match the installed torch."""
    import torch
    import torchvision

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [20.0, 20.0, 30.0, 30.0]])
    kept = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    if kept.tolist() != [0, 2]:
        raise RuntimeError(f"torchvision.ops.nms kept boxes {kept.tolist()} of a test input, not [0, 2]")


def problems() -> list[str]:
    """What does not work: each library of ``LIBRARIES`` that cannot be imported, and torchvision's operators
    when they cannot run (``Type: message`` each, ``[]`` for a working environment)."""
    found = []
    for module in LIBRARIES:
        try:
            importlib.import_module(module)
        except Exception as exc:  # a missing library, a compiled extension that does not load, a version clash
            found.append(f"import {module}: {type(exc).__name__}: {exc}")
    if not any(p.startswith(("import torch:", "import torchvision:")) for p in found):
        try:
            _run_one_operator()
        except Exception as exc:
            found.append(f"torchvision.ops.nms: {type(exc).__name__}: {exc}")
    return found


def broken_install_message(found: list[str]) -> str:
    """One paragraph: what failed, the versions installed in this Python, and the fix."""
    installed = ", ".join(f"{name} {version}" for name, version in versions().items())
    failed = "; ".join(" ".join(p.split()) for p in found)
    found_here = f"Installed in {sys.prefix}: {installed}"
    return f"the installed libraries do not work together ({failed}). {found_here}. Fix: {reinstall()}."


def broken_install(exc: BaseException) -> str | None:
    """The ``error:`` paragraph for a run that failed with ``exc`` when the installed libraries do not work
    together (a missing library, torchvision's operators built for another torch), else None. Only the kinds of
    error a broken install raises are looked into: the check imports every library, which takes seconds."""
    if not isinstance(exc, (ImportError, OSError, RuntimeError, AttributeError)):
        return None
    found = problems()
    return broken_install_message(found) if found else None


def main(argv: list[str] | None = None) -> int:
    """``python -m apa_lightning.cli.install_check``: the versions and one torchvision operator; status 1 with one
    ``error:`` paragraph when the environment does not work."""
    parser = argparse.ArgumentParser(
        prog="python -m apa_lightning.cli.install_check",
        description="Check that torch, torchvision, lightning, hydra and ultralytics import and that a torchvision "
        "operator runs (make install runs this).",
    )
    parser.parse_args(argv)
    found = problems()
    if found:
        print(f"error: {broken_install_message(found)}", file=sys.stderr)
        return 1
    print("Environment works: " + ", ".join(f"{name} {version}" for name, version in versions().items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
