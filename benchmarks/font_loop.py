"""Optimizer steps per second of ``font_ae`` through our trainer against a plain PyTorch loop, in the same run.

    python benchmarks/font_loop.py                      # 3 alternating rounds of 2,000 passes each
    python benchmarks/font_loop.py --passes 5000 --rounds 5

The trainer round builds the datamodule, module, trainer, callbacks and logger from the composed config exactly as
``python -m apa_lightning experiment=font_ae`` does (TensorBoard logging, checkpoints every epoch, validation every
10 epochs, the sanity check) and times ``trainer.fit``. The plain round is the textbook loop on the same network
with the same initialisation and optimizer: per pass a ``randperm`` of the 32 glyphs, then per mini-batch of 5
``zero_grad``, forward, binary cross-entropy, ``backward``, ``step``. Both run on one CPU thread (the experiment's
``torch_threads`` callback sets one; the plain loop gets the same). Rounds alternate so that both see the same
machine load; prints each round and the medians' ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from apa_lightning.data.font import FontDataModule
from apa_lightning.tasks.train import compose_config, instantiate_each, instantiate_plain


def trainer_round(output_dir: Path, passes: int, seed: int) -> tuple[float, int]:
    """Seconds of ``trainer.fit`` for ``passes`` passes of font_ae, and the optimizer steps it took."""
    import lightning as L

    cfg = compose_config(
        [
            "experiment=font_ae",
            f"paths.output_dir={output_dir}",
            f"trainer.max_epochs={passes // 100}",
            "data.passes=100",
            f"seed={seed}",
            "callbacks.progress_bar=null",
        ]
    )
    L.seed_everything(cfg.seed)
    datamodule, model = instantiate_plain(cfg.data), instantiate_plain(cfg.model)
    trainer = instantiate(
        cfg.trainer,
        callbacks=instantiate_each(cfg.callbacks, "callbacks"),
        logger=instantiate_each(cfg.logger, "logger") or False,
        enable_progress_bar=False,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    return time.perf_counter() - start, trainer.global_step


def plain_round(passes: int, seed: int) -> tuple[float, int]:
    """Seconds of a plain PyTorch loop over ``passes`` passes (mini-batches of 5), and its optimizer steps."""
    cfg = compose_config(["experiment=font_ae", "paths.output_dir=unused", f"seed={seed}"])
    torch.manual_seed(seed)
    net = instantiate(cfg.model.net)
    optimizer = instantiate(cfg.model.optimizer, params=net.parameters())
    x = FontDataModule.glyphs()[0]
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    steps, start = 0, time.perf_counter()
    for _ in range(passes):
        for index in torch.randperm(len(x)).split(cfg.data.batch_size):
            xb = x[index]
            optimizer.zero_grad()
            loss = F.binary_cross_entropy(net(xb), xb)
            loss.backward()
            optimizer.step()
            steps += 1
    seconds = time.perf_counter() - start
    torch.set_num_threads(previous)
    return seconds, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=2000, help="passes over the 32 glyphs per round (x100)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.passes % 100:
        parser.error("--passes must be a multiple of 100 (data.passes per epoch)")

    root = Path(tempfile.mkdtemp(prefix="apa_font_bench_"))
    rates: dict[str, list[float]] = {"plain": [], "trainer": []}
    for r in range(args.rounds):
        for name in ("plain", "trainer"):
            if name == "plain":
                seconds, steps = plain_round(args.passes, seed=r)
            else:
                seconds, steps = trainer_round(root / f"round{r}", args.passes, seed=r)
            rates[name].append(steps / seconds)
            print(
                f"round {r} {name:>7}: {steps} steps in {seconds:6.2f} s = {steps / seconds:7.0f} steps/s", flush=True
            )
    plain, ours = statistics.median(rates["plain"]), statistics.median(rates["trainer"])
    print(f"median: plain {plain:.0f} steps/s, font_ae through the trainer {ours:.0f} steps/s: {ours / plain:.2f}x")


if __name__ == "__main__":
    main()
