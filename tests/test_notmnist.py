"""notMNIST (class folders, unreadable files, stratified split) and the code-size autoencoders."""

import csv
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from apa_lightning.data.notmnist import LETTERS, NotMNISTDataModule
from apa_lightning.data.splits import apportion
from apa_lightning.errors import ApaError
from apa_lightning.nets.code_size_ae import CodeSizeAutoencoder
from apa_lightning.tasks import sweep_summary as report
from apa_lightning.tasks.train import train

from .test_cli import run_cli
from .test_sweeps import compose_with_hydra, fake_run

PER_LETTER = 6  # readable PNGs per letter; A and B also hold an unreadable file each


def letter_image(letter: str, index: int) -> Image.Image:
    """A 28x28 greyscale image of ``letter`` at a position that depends on ``index``."""
    image = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(image).text((6 + index % 4 * 2, 4 + index % 3 * 3), letter, fill=255)
    return image


def write_notmnist(folder: Path, per_letter: int = PER_LETTER) -> Path:
    """notMNIST's layout: ``folder/A/*.png`` ... ``folder/J/*.png``, plus a truncated PNG in A/, an empty
    file in B/ and a file manager's hidden file in C/, as in the public archives."""
    for letter in LETTERS:
        (folder / letter).mkdir(parents=True)
        for i in range(per_letter):
            letter_image(letter, i).save(folder / letter / f"{letter}{i}.png")
    (folder / "A" / "corrupt.png").write_bytes((folder / "A" / "A0.png").read_bytes()[:40])
    (folder / "B" / "empty.png").write_bytes(b"")
    (folder / "C" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return folder


@pytest.fixture
def notmnist_dir(tmp_path) -> Path:
    return write_notmnist(tmp_path / "data" / "notMNIST_small")


def split_rows(path: Path) -> list[list[str]]:
    return list(csv.reader(open(path)))[1:]


def test_folder_loads_skipping_unreadable_files_with_one_counting_warning(notmnist_dir, tmp_path, caplog):
    dm = NotMNISTDataModule(data_dir=str(notmnist_dir), split_dir=str(tmp_path / "a"))
    with caplog.at_level(logging.WARNING):
        dm.setup()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 2 of 62 files" in warnings[0]
    assert "A/corrupt.png" in warnings[0] and "B/empty.png" in warnings[0]
    assert dm.classes == list("ABCDEFGHIJ")
    images = torch.cat([dm.train_set.images, dm.val_set.images, dm.test_set.images])
    assert images.shape == (60, 1, 28, 28) and images.dtype == torch.uint8
    # the pixels are the PNGs' own grey values (not a 3-channel or rescaled decoding)
    pngs = [np.asarray(Image.open(p)) for p in sorted(notmnist_dir.glob("*/*[0-9].png"))]
    assert images.long().sum() == int(sum(png.astype(np.int64).sum() for png in pngs))


def test_small_folder_is_split_in_the_lectures_proportions_stratified_seeded_and_listed(notmnist_dir, tmp_path):
    dm = NotMNISTDataModule(data_dir=str(notmnist_dir), split_dir=str(tmp_path / "a"))
    dm.setup()
    # 60 readable images in the proportions of 42,000 / 18,000 / 10,000
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (36, 15, 9)
    for part in (dm.train_set, dm.val_set, dm.test_set):
        per_letter = torch.bincount(part.labels, minlength=10)
        assert per_letter.max() - per_letter.min() <= 1
    rows = split_rows(tmp_path / "a" / "data_split.csv")
    assert len(rows) == 60 and len({r[1] for r in rows}) == 60
    assert all(file.startswith(f"{label}/") for _, file, label in rows)
    assert {"A/corrupt.png", "B/empty.png"}.isdisjoint(r[1] for r in rows)
    assert [r[0] for r in rows].count("test") == 9 and not list((tmp_path / "a").glob("*.partial"))
    # the listed test files are the test images, in the order served: letters mixed, not grouped
    test_files = [r[1] for r in rows if r[0] == "test"]
    for i, file in enumerate(test_files):
        assert torch.equal(dm.test_set.images[i, 0], torch.from_numpy(np.array(Image.open(notmnist_dir / file))))
    assert len({file[0] for file in test_files[:5]}) > 1

    NotMNISTDataModule(data_dir=str(notmnist_dir), split_dir=str(tmp_path / "b")).setup()
    assert split_rows(tmp_path / "b" / "data_split.csv") == rows
    NotMNISTDataModule(data_dir=str(notmnist_dir), split_seed=7, split_dir=str(tmp_path / "c")).setup()
    assert split_rows(tmp_path / "c" / "data_split.csv") != rows


def test_big_enough_folder_gives_the_exact_sizes_drawn_per_letter(notmnist_dir):
    dm = NotMNISTDataModule(data_dir=str(notmnist_dir), sizes=[20, 10, 10])
    dm.setup()
    assert [torch.bincount(p.labels, minlength=10).tolist() for p in (dm.train_set, dm.val_set, dm.test_set)] == [
        [2] * 10,
        [1] * 10,
        [1] * 10,
    ]


def test_apportion_hits_the_total_exactly_within_caps():
    assert apportion(42000, [52909, 52911, 52912, 52911, 52912, 52912, 52912, 52912, 52912, 52911]) == [4200] * 10
    assert apportion(10, [50, 30, 20]) == [5, 3, 2]
    assert apportion(5, [1, 5]) == [1, 4]
    with pytest.raises(ValueError):
        apportion(7, [1, 5])


def test_parent_folder_picks_the_variant(tmp_path):
    parent = tmp_path / "data"
    write_notmnist(parent / "notMNIST_small", per_letter=3)
    write_notmnist(parent / "notMNIST_large", per_letter=5)
    sizes = {}
    for variant in ("auto", "small", "large"):
        dm = NotMNISTDataModule(data_dir=str(parent), variant=variant)
        dm.setup()
        sizes[variant] = len(dm.train_set) + len(dm.val_set) + len(dm.test_set)
    assert sizes == {"auto": 50, "small": 30, "large": 50}  # auto prefers the large archive
    shutil.rmtree(parent / "notMNIST_large")
    with pytest.raises(ApaError, match=r"no A/ \.\.\. J/ nor notMNIST_large/"):
        NotMNISTDataModule(data_dir=str(parent), variant="large").setup()


def test_missing_data_and_bad_options_are_clear_errors(tmp_path, notmnist_dir):
    with pytest.raises(ApaError) as missing:
        NotMNISTDataModule(data_dir=str(tmp_path / "nowhere")).setup()
    message = str(missing.value)
    assert "notMNIST is not in" in message and "nowhere" in message
    assert "notMNIST_small.tar.gz" in message and "A/ ... J/" in message and "data.data_dir" in message
    shutil.rmtree(notmnist_dir / "C")
    shutil.rmtree(notmnist_dir / "J")
    with pytest.raises(ApaError, match="lacks the letter folders C, J"):
        NotMNISTDataModule(data_dir=str(notmnist_dir)).setup()
    with pytest.raises(ApaError, match="data.variant='medium'"):
        NotMNISTDataModule(variant="medium")
    with pytest.raises(ApaError, match="data.sizes"):
        NotMNISTDataModule(sizes=[42000, 18000])


@pytest.mark.parametrize("code_size, layers", [(14, 2), (7, 3), (2, 3), (1, 3)])
def test_code_size_autoencoder_code_maps_and_outputs(code_size, layers):
    net = CodeSizeAutoencoder(code_size=code_size)
    x = torch.rand(4, 1, 28, 28)
    code, out = net.encoder(x), net(x)
    assert code.shape == (4, 1, code_size, code_size) == (4, *net.code_shape)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.encoder) == layers
    assert {type(m) for m in net.encoder[1::2]} == {torch.nn.ReLU} and isinstance(net.decoder[-1], torch.nn.Sigmoid)
    assert out.shape == (4, 1, 28, 28) and 0 <= out.min() and out.max() <= 1
    assert torch.equal(net.encoder[-2].bias, torch.tensor([0.1]))  # the code starts alive


def test_code_size_autoencoder_refuses_other_sizes():
    with pytest.raises(ApaError, match="code_size=3"):
        CodeSizeAutoencoder(code_size=3)
    with pytest.raises(ApaError, match="data.image_size=28"):
        CodeSizeAutoencoder(code_size=7)(torch.rand(2, 1, 32, 32))


@pytest.mark.parametrize(
    "experiment, bits, ratio", [("code14", 6272, 1.0), ("code7", 1568, 4.0), ("code2", 128, 49.0), ("code1", 32, 196.0)]
)
def test_each_code_size_experiment_runs_and_reports_bits_and_compression(
    make_cfg, notmnist_dir, experiment, bits, ratio
):
    cfg = make_cfg(
        f"experiment=notmnist_{experiment}", "trainer=debug", "logger=csv", f"data.data_dir={notmnist_dir.parent}"
    )
    train(cfg)
    out = Path(cfg.paths.output_dir)
    record = json.loads((out / "metrics.json").read_text())
    assert record["status"] == "completed" and record["task_name"] == f"notmnist_{experiment}"
    assert record["test"]["test/code_bits"] == bits and record["test"]["test/compression_ratio"] == ratio
    assert {"test/mse", "test/psnr", "test/ssim"} <= record["test"].keys()
    assert len(split_rows(out / "data_split.csv")) == 60 and (out / "images" / "reconstructions.png").is_file()


def test_other_autoencoders_report_no_code_size(make_cfg):
    cfg = make_cfg("trainer=debug", "logger=csv")
    train(cfg)
    record = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert "test/psnr" in record["test"] and "test/code_bits" not in record["test"]


def code_run(bits: int, score: float) -> dict:
    return {
        "status": "completed",
        "optimized_metric": "val/loss",
        "optimized_mode": "min",
        "best_score": score,
        "test": {"test/code_bits": float(bits), "test/mse": score},
    }


def test_summary_can_be_ordered_by_a_column_and_keeps_that_order_when_rebuilt(tmp_path, capsys):
    fake_run(tmp_path, "0", ["experiment=notmnist_code7"], code_run(1568, 0.02))
    fake_run(tmp_path, "1", ["experiment=notmnist_code1"], code_run(32, 0.09))
    fake_run(tmp_path, "2", ["experiment=notmnist_code14"], code_run(6272, 0.01))
    fake_run(tmp_path, "3", ["experiment=notmnist_code2"], {"status": "failed", "error": "boom", "best_score": None})
    table = report.write_summary(tmp_path, sort_by="test/code_bits", descending=True)
    assert [(row["job"], row["best"]) for row in table] == [("2", "*"), ("0", ""), ("1", ""), ("3", "")]
    assert (
        "sorted by test/code_bits (descending), the best by best val/loss marked *"
        in (tmp_path / "summary.md").read_text()
    )
    assert [row["job"] for row in report.summarize(report.collect_runs(tmp_path), "test/code_bits")[0]] == [
        "1",
        "0",
        "2",
        "3",
    ]
    # a column no finished run has is a typo: refused, naming the columns there are
    with pytest.raises(ApaError, match=r"cannot be sorted by 'test/code_bytes'.*test/code_bits"):
        report.summarize(report.collect_runs(tmp_path), "test/code_bytes")

    # the rebuilt summary takes the order the sweep recorded in multirun.yaml; --sort-by overrides it
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  callbacks:\n    sweep_summary:\n      sort_by: test/code_bits\n      descending: true\n"
    )
    report.main([str(tmp_path)])
    rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert [r["job"] for r in rows] == ["2", "0", "1", "3"]
    report.main([str(tmp_path), "--sort-by", "test/mse"])
    assert [r["job"] for r in csv.DictReader(open(tmp_path / "summary.csv"))] == ["2", "0", "1", "3"]
    report.main([str(tmp_path), "--sort-by", "test/mse", "--descending"])
    assert [r["job"] for r in csv.DictReader(open(tmp_path / "summary.csv"))] == ["1", "0", "2", "3"]
    capsys.readouterr()


def test_code_size_preset_sweeps_the_four_experiments_ordered_by_code_size():
    cfg = compose_with_hydra("hparams_search=notmnist_code_sizes")
    assert cfg.hydra.sweeper.params.experiment == "notmnist_code14,notmnist_code7,notmnist_code2,notmnist_code1"
    assert (cfg.hydra.callbacks.sweep_summary.sort_by, cfg.hydra.callbacks.sweep_summary.descending) == (
        "test/code_bits",
        True,
    )
    job = compose_with_hydra("hparams_search=notmnist_code_sizes", "experiment=notmnist_code2")
    assert (job.task_name, job.model.net.code_size) == ("notmnist_code2", 2)


@pytest.mark.slow
def test_code_size_sweep_writes_a_summary_ordered_by_code_size(notmnist_dir, tmp_path):
    done = run_cli(
        "-m",
        "hparams_search=notmnist_code_sizes",
        f"data.data_dir={notmnist_dir}",
        "trainer=debug",
        "logger=csv",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert [
        (r["overrides"].split()[0], float(r["test/code_bits"]), float(r["test/compression_ratio"])) for r in rows
    ] == [
        ("experiment=notmnist_code14", 6272, 1),
        ("experiment=notmnist_code7", 1568, 4),
        ("experiment=notmnist_code2", 128, 49),
        ("experiment=notmnist_code1", 32, 196),
    ]
    assert "sorted by test/code_bits (descending)" in (sweep / "summary.md").read_text()


def test_standin_renderer_writes_a_folder_the_datamodule_reads_and_refuses_to_overwrite_it(tmp_path, capsys):
    import importlib.util

    import matplotlib

    path = Path(__file__).parents[1] / "benchmarks" / "notmnist_standin.py"
    spec = importlib.util.spec_from_file_location("notmnist_standin", path)
    standin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(standin)
    fonts = tmp_path / "fonts"  # matplotlib's fonts: the test needs no system font
    fonts.mkdir()
    for name in ("DejaVuSans.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSansDisplay.ttf"):  # the last draws no letters
        shutil.copy(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name, fonts)
    count = 2
    assert standin.main([str(tmp_path), "--fonts", str(fonts), "--per-font", "2"]) == 0
    assert "left out 1 fonts that do not draw A-J: DejaVuSansDisplay.ttf" in capsys.readouterr().out
    dm = NotMNISTDataModule(data_dir=str(tmp_path), split_dir=str(tmp_path / "split"))
    dm.setup()
    images = torch.cat([dm.train_set.images, dm.val_set.images, dm.test_set.images])
    assert images.shape == (10 * count * 2, 1, 28, 28) and dm.classes == list(LETTERS)
    assert images[:, :, 0, :].float().mean() < 10 and images.float().amax() > 200  # white glyphs on black
    assert len(images.unique()) > 50  # grey edges, as notMNIST's
    assert not (tmp_path / "notMNIST_small.partial").exists()
    first = sorted((tmp_path / "notMNIST_small" / "A").iterdir())[0].read_bytes()
    assert standin.main([str(tmp_path), "--fonts", str(fonts)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert sorted((tmp_path / "notMNIST_small" / "A").iterdir())[0].read_bytes() == first
    assert standin.main([str(tmp_path / "other"), "--fonts", str(tmp_path / "split")]) == 1
    assert "no .ttf or .otf font under" in capsys.readouterr().err
