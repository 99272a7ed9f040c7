"""Training images per second of our trainer against a plain PyTorch loop on the same network and batches.

    python benchmarks/loop_overhead.py                                  # every case this machine can run
    python benchmarks/loop_overhead.py --case digits_cnn_base --rounds 5
    python benchmarks/loop_overhead.py --case fashion_mnist_cnn_v2 --batches 200 model.channels_last=true
    python benchmarks/loop_overhead.py --threads 1 --cpu-time        # on a busy shared machine

The trainer round builds the datamodule, module, trainer, callbacks, logger and progress bar from the composed
config with ``apa_lightning.tasks.train.build_run``, exactly as ``python -m apa_lightning`` does, and fits ``--epochs``
epochs of ``--batches`` training batches; its images per second are the Throughput callback's (the training
batches, not the sanity check, the short validations or what follows a validation, such as the checkpoints at the
epochs' ends).
The plain round is the textbook loop on the same network (same initialisation), optimizer, data loader and batch
preparation (``float_images`` with the training augmentation): ``zero_grad``, forward, cross-entropy,
``backward``, ``step``, over as many epochs of the loader, with the same speed settings as the trainer side
(``matmul_precision``, ``trainer.benchmark``, ``trainer.precision``, ``model.channels_last``, ``model.compile``).
Rounds alternate so that both see the same machine load; prints each round, the medians and their ratio. Extra
arguments are config overrides given to both (``model.channels_last=true``, ``model.compile=true``,
``trainer=gpu``, ``data/augmentation=standard``).

Cases: ``fashion_mnist_cnn_v2`` (CPU, batch 128; the Fashion-MNIST IDX files of Debian's dataset-fashion-mnist in
/usr/share/datasets/fashion-mnist, else synthetic images of the same shape, said so), ``digits_cnn_base`` (CPU,
the embedded digits at their default batch 16, three epochs a round) and, when CUDA is present,
``cifar10_resnet18_gpu`` (ResNet18 on synthetic CIFAR-shaped images, batch 128, ``trainer=gpu``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig

from apa_lightning.callbacks.throughput import Throughput
from apa_lightning.data.in_memory import ImageTensorDataset, InMemoryImageDataModule
from apa_lightning.tasks.precision import apply_matmul_precision, resolved_precision
from apa_lightning.tasks.train import build_run, compose_config, instantiate_plain

FASHION_MNIST_IDX = Path("/usr/share/datasets/fashion-mnist")


@dataclass
class Case:
    overrides: list[str]
    batches: int  # training batches per epoch
    epochs: int = 1  # epochs per round: short epochs give rounds long enough to time steadily
    gpu: bool = False
    synthetic: bool = False  # CIFAR-shaped random images instead of the configured dataset
    notes: list[str] = field(default_factory=list)


def cases() -> dict[str, Case]:
    fashion = Case(["model=cnn_v2", "data=fashion_mnist", "trainer=cpu", "data.batch_size=128"], batches=100)
    if (FASHION_MNIST_IDX / "train-images-idx3-ubyte.gz").is_file():
        fashion.overrides.append(f"data.source_dir={FASHION_MNIST_IDX}")
    else:
        fashion.synthetic = True
        fashion.notes.append(
            f"no Fashion-MNIST in {FASHION_MNIST_IDX} (apt-get install dataset-fashion-mnist): synthetic images"
        )
    return {
        "fashion_mnist_cnn_v2": fashion,
        # an epoch of the 1,257 training digits is 78 batches, about 0.2 s: three make a round
        "digits_cnn_base": Case(["model=cnn_base", "trainer=cpu"], batches=78, epochs=3),
        "cifar10_resnet18_gpu": Case(
            ["model=resnet18", "data=cifar10", "trainer=gpu", "data.batch_size=128"],
            batches=200,
            gpu=True,
            synthetic=True,
        ),
    }


class SyntheticImages(InMemoryImageDataModule):
    """Random uint8 images of the configured channels and size, labels cycling through the classes."""

    def __init__(self, count: int = 4096, **kwargs) -> None:
        super().__init__(**kwargs)
        self.count = count

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        generator = torch.Generator().manual_seed(0)
        shape = (self.count, self.channels, self.image_size, self.image_size)
        images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
        labels = torch.arange(self.count) % self.num_classes
        parts = [ImageTensorDataset(images[i::8], labels[i::8]) for i in range(2)]
        self.classes = [str(c) for c in range(self.num_classes)]
        self.set_splits(ImageTensorDataset(images, labels), *parts)


def synthetic_like(cfg: DictConfig, batches: int) -> SyntheticImages:
    """Synthetic images served as the configured datamodule serves its own (augmentation included)."""
    data = cfg.data
    return SyntheticImages(
        count=batches * data.batch_size,
        batch_size=data.batch_size,
        image_size=data.image_size,
        channels=data.channels,
        num_classes=data.num_classes,
        normalize=data.get("normalize", "none"),
        augmentation=data.get("augmentation"),
        augment_on=data.get("augment_on", "device"),
    )


def round_config(case: Case, root: Path, name: str, extra: list[str]) -> DictConfig:
    return compose_config(
        [
            *case.overrides,
            f"paths.root_dir={root}",
            f"paths.data_dir={root / 'data'}",
            f"paths.output_dir={root / name}",
            f"trainer.max_epochs={case.epochs}",
            f"trainer.limit_train_batches={case.batches}",
            "trainer.limit_val_batches=2",
            *extra,
        ]
    )


def trainer_round(
    case: Case, root: Path, name: str, extra: list[str], seed: int, clock=time.perf_counter
) -> tuple[int, float]:
    """Training images and seconds of ``trainer.fit`` as the CLI builds it (``case.epochs`` epochs)."""
    cfg = round_config(case, root, name, extra)
    L.seed_everything(seed, workers=True, verbose=False)
    datamodule, model, trainer = build_run(cfg)
    if case.synthetic:
        datamodule = synthetic_like(cfg, case.batches)
    throughput = next((c for c in trainer.callbacks if isinstance(c, Throughput)), None)
    if throughput is None:  # callbacks.throughput=null (or no callbacks): time the epoch all the same
        throughput = Throughput()
        trainer.callbacks.append(throughput)
    throughput.clock = clock
    trainer.fit(model, datamodule=datamodule)
    return throughput.images, throughput.train_seconds


def plain_round(case: Case, root: Path, extra: list[str], seed: int, clock=time.perf_counter) -> tuple[int, float]:
    """Training images and seconds of the textbook loop over the same batches, with the speed settings the
    trainer side applies: ``matmul_precision``, ``trainer.benchmark`` (cudnn), ``trainer.precision``,
    ``model.channels_last`` (the network and its inputs), ``model.compile`` (``net.compile()``, as the module does)
    and the training augmentation of ``data.augmentation`` (``float_images(..., augment=True)`` on the device, or
    the loader's per-image transform with ``data.augment_on=workers``)."""
    cfg = round_config(case, root, "plain", extra)
    device = torch.device("cuda" if case.gpu else "cpu")
    datamodule = synthetic_like(cfg, case.batches) if case.synthetic else instantiate_plain(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    apply_matmul_precision(cfg.get("matmul_precision"))
    if cfg.trainer.get("benchmark") is not None:
        torch.backends.cudnn.benchmark = bool(cfg.trainer.benchmark)
    L.seed_everything(seed, workers=True, verbose=False)
    net = instantiate(cfg.model.net).to(device).train()
    channels_last = bool(cfg.model.get("channels_last", False))
    if channels_last:
        net.to(memory_format=torch.channels_last)
    optimizer = instantiate(cfg.model.optimizer, params=[p for p in net.parameters() if p.requires_grad])
    if cfg.model.get("compile", False):
        net.compile()
    label_smoothing = cfg.model.get("label_smoothing", 0.0)
    precision = resolved_precision(cfg.trainer).get("precision", cfg.trainer.precision)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(enabled=dtype is torch.float16)
    images, start = 0, clock()
    for _ in range(case.epochs):
        for i, batch in enumerate(datamodule.train_dataloader()):
            if i == case.batches:
                break
            x, y = (t.to(device, non_blocking=True) for t in batch)
            x = datamodule.float_images(x, augment=True)  # what on_after_batch_transfer gives a training batch
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad()
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = F.cross_entropy(net(x), y, label_smoothing=label_smoothing)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            images += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images, clock() - start


def run_case(name: str, case: Case, root: Path, rounds: int, extra: list[str], clock=time.perf_counter) -> float:
    """Alternating rounds of both loops; prints each and returns the ratio of the medians (ours / plain)."""
    for note in case.notes:
        print(f"{name}: {note}", flush=True)
    rates: dict[str, list[float]] = {"plain": [], "trainer": []}
    for r in range(rounds):
        for kind in ("plain", "trainer"):
            if kind == "plain":
                images, seconds = plain_round(case, root, extra, r, clock)
            else:
                images, seconds = trainer_round(case, root, f"{name}_round{r}", extra, r, clock)
            rates[kind].append(images / seconds)
            print(f"{name} round {r} {kind:>7}: {images} images in {seconds:6.2f} s = {images / seconds:7.0f} images/s")
    plain, ours = statistics.median(rates["plain"]), statistics.median(rates["trainer"])
    print(f"{name} median: plain {plain:.0f} images/s, ours {ours:.0f} images/s: {ours / plain:.2f}x", flush=True)
    return ours / plain


def main(argv: list[str] | None = None) -> None:
    all_cases = cases()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", choices=list(all_cases), help="repeatable; default: every case")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, help="training batches per epoch (default: the case's)")
    parser.add_argument("--epochs", type=int, help="epochs per round (default: the case's)")
    parser.add_argument("--threads", type=int, help="torch's CPU threads (default: torch's choice, as a run has)")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with this process's CPU seconds instead of the wall clock (a busy shared machine; use --threads 1)",
    )
    parser.add_argument("--root", type=Path, help="where data and run directories go (default: a new temp folder)")
    parser.add_argument("overrides", nargs="*", help="config overrides for both loops, e.g. model.channels_last=true")
    args = parser.parse_args(argv)
    root = args.root or Path(tempfile.mkdtemp(prefix="apa_loop_bench_"))
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.cpu_time else time.perf_counter
    print(f"{torch.get_num_threads()} CPU threads, {'CPU' if args.cpu_time else 'wall'} seconds", flush=True)
    ratios = {}
    for name in args.case or list(all_cases):
        case = all_cases[name]
        if case.gpu and not torch.cuda.is_available():
            print(f"{name}: skipped, no CUDA GPU", flush=True)
            continue
        if args.batches:
            case.batches = args.batches
        if args.epochs:
            case.epochs = args.epochs
        ratios[name] = run_case(name, case, root, args.rounds, args.overrides, clock)
    print("\n".join(f"{name}: ours / plain = {ratio:.2f}x" for name, ratio in ratios.items()))


if __name__ == "__main__":
    main()
