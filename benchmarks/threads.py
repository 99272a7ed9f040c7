"""Wall time of the default run under OpenMP wait policies, on an idle machine and beside CPU-bound processes.

    python benchmarks/threads.py                              # 2 rounds idle, 2 rounds beside 4 busy processes
    python benchmarks/threads.py --epochs 3 --rounds 3 --busy 4 --policies passive spin:300000 spin:10000

Each policy is one environment for a fresh ``python -m apa_lightning trainer.max_epochs=N`` (start-up included):
``passive`` is ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep at once), ``spin:N`` is ``GOMP_SPINCOUNT=N``
(waiting threads spin N rounds, about N/100,000 ms, then sleep; 300,000 is OpenMP's own default, 3 ms),
``active`` is ``OMP_WAIT_POLICY=ACTIVE`` (spin for minutes). Rounds interleave the policies so that they share the
machine's state; the busy phase starts ``--busy`` processes that spin on the CPU for its whole length. Prints
every run, then each policy's median and its ratio to the first policy's median in the same phase, and checks
that every run ended at the same test metrics (the wait policy must not change a number).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def policy_env(policy: str) -> dict[str, str]:
    """The environment of one run under ``policy`` (the package's own choice is used only where both are unset)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if policy in ("passive", "active"):
        env["OMP_WAIT_POLICY"] = policy.upper()
    elif policy.startswith("spin:"):
        env["GOMP_SPINCOUNT"] = policy.split(":", 1)[1]
    elif policy != "package":
        raise SystemExit(f"error: unknown policy {policy!r}: use passive, active, package or spin:N")
    return env


def one_run(policy: str, epochs: int, root: Path, threads: int | None) -> tuple[float, dict]:
    """Seconds of one whole run under ``policy`` and its test metrics."""
    out = Path(tempfile.mkdtemp(dir=root))
    cmd = [sys.executable, "-m", "apa_lightning", f"paths.root_dir={out}", f"trainer.max_epochs={epochs}"]
    if threads:
        cmd.append(f"cpu_threads={threads}")
    start = time.perf_counter()
    subprocess.run(cmd, env=policy_env(policy), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    (metrics_file,) = out.rglob("metrics.json")
    test = json.loads(metrics_file.read_text())["test"]
    return seconds, test


def spin() -> None:
    while True:
        pass


def phase(name: str, busy: int, args: argparse.Namespace, root: Path) -> dict[str, list[float]]:
    burners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(busy)]
    for p in burners:
        p.start()
    times: dict[str, list[float]] = {p: [] for p in args.policies}
    tests: set[str] = set()
    try:
        for r in range(args.rounds):
            for policy in args.policies:
                seconds, test = one_run(policy, args.epochs, root, args.threads)
                times[policy].append(seconds)
                tests.add(json.dumps(test, sort_keys=True))
                print(f"{name} round {r + 1} {policy:>12}: {seconds:7.1f} s  {test}", flush=True)
    finally:
        for p in burners:
            p.terminate()
    if len(tests) != 1:
        print(f"{name}: the policies ended at different test metrics: {sorted(tests)}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--busy", type=int, default=4, help="CPU-bound processes beside the busy phase (0: skip it)")
    parser.add_argument("--threads", type=int, default=None, help="cpu_threads (default: the config's)")
    parser.add_argument("--policies", nargs="+", default=["passive", "spin:300000", "spin:10000", "package"])
    parser.add_argument("--idle-only", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        phases = {"idle": phase("idle", 0, args, Path(tmp))}
        if args.busy and not args.idle_only:
            phases[f"busy+{args.busy}"] = phase(f"busy+{args.busy}", args.busy, args, Path(tmp))
    for name, times in phases.items():
        base = statistics.median(times[args.policies[0]])
        for policy, values in times.items():
            median = statistics.median(values)
            print(f"{name:>7} {policy:>12}: median {median:7.1f} s, {median / base:.2f}x {args.policies[0]}")


if __name__ == "__main__":
    main()
