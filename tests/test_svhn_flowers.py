"""SVHN and Flowers102 from files in their real on-disk formats, the experiments on them, model_summary.txt."""

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from apa_lightning.callbacks.image_grids import ImageGrids
from apa_lightning.callbacks.model_summary import summarize
from apa_lightning.data.flowers import FlowersDataModule
from apa_lightning.data.svhn import SVHNDataModule
from apa_lightning.errors import ApaError
from apa_lightning.nets.conv_ae import ConvAutoencoder
from apa_lightning.runs.figures import CARD_WIDTH, GAP, MARGIN, labelled_grid, line_height, text_width
from apa_lightning.tasks.train import instantiate_plain, train

FAST = ["trainer=debug", "logger=csv"]


def write_svhn_mat(path: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An SVHN .mat file as torchvision downloads it: X uint8 (32, 32, 3, N), y (N, 1) in 1..10."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    labels = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 1..10, 10 = the digit 0
    scipy.io.savemat(path, {"X": images, "y": labels})
    return images, labels


@pytest.fixture
def svhn_root(tmp_path) -> Path:
    """train_32x32.mat with 50 images and test_32x32.mat with 20, directly in the data folder."""
    root = tmp_path / "svhn"
    root.mkdir()
    write_svhn_mat(root / "train_32x32.mat", 50, seed=0)
    write_svhn_mat(root / "test_32x32.mat", 20, seed=1)
    return root


FLOWER_LABELS = [(i * 7) % 5 + 1 for i in range(30)]  # 1-based, as in imagelabels.mat


def flower_colour(image_id: int) -> tuple[int, int, int]:
    return (image_id * 8) % 256, (255 - image_id * 5) % 256, (image_id * 37) % 256


@pytest.fixture
def flowers_root(tmp_path, monkeypatch) -> Path:
    """A Flowers102 folder in torchvision's layout: flowers-102/jpg/image_00001.jpg ... image_00030.jpg (solid
    colours, 48x64 and 64x40), imagelabels.mat and setid.mat (10 images per split), torchvision's md5 sums
    patched to the fixture's own."""
    from torchvision.datasets import Flowers102

    root = tmp_path / "flowers"
    folder = root / "flowers-102"
    (folder / "jpg").mkdir(parents=True)
    for image_id in range(1, 31):
        size = (64, 48) if image_id % 2 else (40, 64)
        Image.new("RGB", size, flower_colour(image_id)).save(folder / "jpg" / f"image_{image_id:05d}.jpg", quality=95)
    scipy.io.savemat(folder / "imagelabels.mat", {"labels": np.array([FLOWER_LABELS], dtype=np.uint8)})
    ids = np.arange(1, 31, dtype=np.uint16)
    scipy.io.savemat(
        folder / "setid.mat", {"trnid": ids[None, :10], "valid": ids[None, 10:20], "tstid": ids[None, 20:]}
    )
    md5 = {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in ("imagelabels.mat", "setid.mat")}
    files = dict(Flowers102._file_dict)
    files["label"], files["setid"] = ("imagelabels.mat", md5["imagelabels.mat"]), ("setid.mat", md5["setid.mat"])
    monkeypatch.setattr(Flowers102, "_file_dict", files)
    return root


def test_svhn_reads_the_mat_files_maps_label_10_to_0_and_splits_with_its_seed(svhn_root):
    dm = SVHNDataModule(data_dir=str(svhn_root), download=False, val_size=10, split_seed=1)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (40, 10, 20)
    assert dm.classes == [str(d) for d in range(10)]
    test = scipy.io.loadmat(svhn_root / "test_32x32.mat")
    # (32, 32, 3, N) -> (N, 3, 32, 32): image i, channel c, row h, column w is X[h, w, c, i]
    assert torch.equal(dm.test_set.images, torch.from_numpy(test["X"]).permute(3, 2, 0, 1))
    assert dm.test_set.labels.tolist() == [(i % 10 + 1) % 10 for i in range(20)]
    assert dm.test_set.labels[9] == 0 and test["y"][9, 0] == 10
    # the split is a seeded permutation: the same seed gives the same validation images, another seed others
    again = SVHNDataModule(data_dir=str(svhn_root), download=False, val_size=10, split_seed=1)
    again.setup()
    other = SVHNDataModule(data_dir=str(svhn_root), download=False, val_size=10, split_seed=2)
    other.setup()
    assert torch.equal(again.val_set.images, dm.val_set.images)
    assert not torch.equal(other.val_set.images, dm.val_set.images)
    # train and validation together are the training file, each image once
    together = torch.cat([dm.train_set.images, dm.val_set.images]).flatten(1)
    train = torch.from_numpy(scipy.io.loadmat(svhn_root / "train_32x32.mat")["X"]).permute(3, 2, 0, 1).flatten(1)
    assert sorted(map(tuple, together[:, :8].tolist())) == sorted(map(tuple, train[:, :8].tolist()))


def test_svhn_extra_joins_the_training_part_only(svhn_root):
    write_svhn_mat(svhn_root / "extra_32x32.mat", 30, seed=2)
    dm = SVHNDataModule(data_dir=str(svhn_root), download=False, val_size=10, use_extra=True)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (70, 10, 20)


@pytest.mark.parametrize(
    "content, message",
    [
        ({"images": np.zeros((32, 32, 3, 4), np.uint8), "y": np.ones((4, 1))}, r"holds \['images', 'y'\]"),
        ({"X": np.zeros((28, 28, 1, 4), np.uint8), "y": np.ones((4, 1))}, r"X is uint8 \(28, 28, 1, 4\)"),
        ({"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.zeros((4, 1))}, r"labels in \[0, 0\]"),
        (None, "not a readable MATLAB file"),
    ],
)
def test_a_malformed_svhn_file_is_an_error_naming_the_file(svhn_root, content, message):
    path = svhn_root / "train_32x32.mat"
    if content is None:
        path.write_bytes(b"not a mat file at all")
    else:
        scipy.io.savemat(path, content)
    with pytest.raises(ApaError, match=message) as err:
        SVHNDataModule(data_dir=str(svhn_root), download=False, val_size=1).setup()
    assert str(path) in str(err.value)


def test_missing_svhn_offline_names_the_folder_the_files_and_the_ways_out(tmp_path):
    dm = SVHNDataModule(data_dir=str(tmp_path), download=True)
    with pytest.raises(ApaError) as err:
        dm.prepare_data()  # the download fails: tests run offline
    message = str(err.value)
    assert str(tmp_path) in message and "train_32x32.mat, test_32x32.mat missing" in message
    assert "data.data_dir" in message and "could not be downloaded" in message
    assert not list(tmp_path.iterdir())  # no partial download left behind
    with pytest.raises(ApaError, match="train_32x32.mat, test_32x32.mat missing.*data.download=false"):
        SVHNDataModule(data_dir=str(tmp_path), download=False).setup()


def _served(dm: FlowersDataModule, dataset) -> torch.Tensor:
    return dm.on_after_batch_transfer((dataset.images, dataset.labels), 0)[0]


def test_flowers_are_grey_32x32_in_minus_one_to_one_with_the_official_split(flowers_root):
    dm = FlowersDataModule(data_dir=str(flowers_root), download=False)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (10, 10, 10)
    images = _served(dm, dm.train_set)
    assert images.shape == (10, 1, 32, 32) and images.dtype == torch.float32
    assert -1 <= images.min() and images.max() <= 1
    # each picture is one colour: its grey value (ITU-R 601 luma), mapped from [0, 255] to [-1, 1]
    for image, image_id in zip(images, range(1, 11), strict=True):
        r, g, b = flower_colour(image_id)
        expected = (0.299 * r + 0.587 * g + 0.114 * b) / 255 * 2 - 1
        assert image.mean().item() == pytest.approx(expected, abs=0.03)
    assert dm.train_set.labels.tolist() == [label - 1 for label in FLOWER_LABELS[:10]]


def test_flowers_keep_only_the_listed_ids_in_every_stage(flowers_root):
    dm = FlowersDataModule(data_dir=str(flowers_root), download=False, image_ids=[25, 3, 14], value_range=[0, 1])
    dm.setup()
    for dataset in (dm.train_set, dm.val_set, dm.test_set):
        assert dataset.labels.tolist() == [FLOWER_LABELS[i - 1] - 1 for i in (25, 3, 14)]
    images = _served(dm, dm.test_set)
    assert 0 <= images.min() and images.max() <= 1
    grey = [(0.299 * r + 0.587 * g + 0.114 * b) / 255 for r, g, b in map(flower_colour, (25, 3, 14))]
    assert images.mean(dim=(1, 2, 3)).tolist() == pytest.approx(grey, abs=0.015)
    with pytest.raises(ApaError, match=r"data.image_ids lists \[31\]"):
        FlowersDataModule(data_dir=str(flowers_root), download=False, image_ids=[1, 31]).setup()


def test_missing_flowers_name_the_folder_and_files(tmp_path):
    with pytest.raises(ApaError, match=r"flowers-102 \(expected jpg/image_00001.jpg .*setid.mat.*data.data_dir"):
        FlowersDataModule(data_dir=str(tmp_path), download=True).prepare_data()


def test_model_summary_lists_layers_keeps_modes_and_statistics():
    net = ConvAutoencoder(in_channels=3)
    net.train()
    net.decoder.eval()  # a mixed state, as a frozen part leaves it
    before, random_state = net.encoder[0][1].running_mean.clone(), torch.get_rng_state()
    text = summarize(net, (3, 32, 32), depth=3)
    assert torch.equal(torch.get_rng_state(), random_state)  # torchinfo's random input drew from a forked stream
    assert net.encoder.training and not net.decoder.training and not any(m.training for m in net.decoder.modules())
    assert torch.equal(net.encoder[0][1].running_mean, before)  # summarised in eval mode
    assert re.search(r"Conv2d \(0\)\s+\[1, 8, 16, 16\]\s+224", text)  # 3*8*9 + 8
    assert f"Total params: {sum(p.numel() for p in net.parameters()):,}" in text


class LinearCode(torch.nn.Module):
    """Codes are the first two pixels; a decoded 1x2 picture shows z[0] on the left and z[1] on the right."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :2]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return (0.5 + 0.1 * z).view(-1, 1, 1, 2)


def test_latent_navigation_varies_the_first_coordinate_along_rows_and_the_second_down_columns():
    grids = ImageGrids(num_images=3, navigation_steps=5, navigation_span=2.0, navigation_image=1)
    x = torch.tensor([[-1.0, -2.0], [0.0, 0.0], [1.0, 2.0]]).view(3, 1, 1, 2)  # codes' spread: 1 and 2
    pictures = grids.latent_navigation(LinearCode(), x)
    assert pictures.shape == (25, 1, 1, 2)
    offsets = torch.linspace(-2, 2, 5)
    left, right = pictures[:, 0, 0, 0].view(5, 5), pictures[:, 0, 0, 1].view(5, 5)
    assert torch.allclose(left, (0.5 + 0.1 * offsets).expand(5, 5))  # z[0] = 0 + offset * 1 along each row
    assert torch.allclose(right, (0.5 + 0.1 * 2 * offsets)[:, None].expand(5, 5))  # z[1] = offset * 2 down
    assert torch.equal(pictures[12], LinearCode().decode(torch.zeros(1, 2))[0])  # the middle: the image's own code


def _record(cfg) -> dict:
    return json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())


@pytest.mark.parametrize("experiment", ["svhn_ae", "svhn_dae"])
def test_svhn_experiments_run_and_show_originals_noisy_and_outputs(make_cfg, svhn_root, experiment):
    denoising = experiment == "svhn_dae"
    small = ["data.val_size=10", "data.batch_size=4"] + (["model.test_noise_levels=[0.1]"] if denoising else [])
    cfg = make_cfg(f"experiment={experiment}", f"data.data_dir={svhn_root}", *small, *FAST)
    train(cfg)
    out = Path(cfg.paths.output_dir)
    record = _record(cfg)
    assert record["status"] == "completed" and {"test/psnr", "test/ssim"} <= record["test"].keys()
    if denoising:
        assert cfg.model.noise.level == 0.1 and record["test"]["test/noise0.1/input_psnr"] < 25
    labels = ["input", "noisy input (gaussian 0.1)", "reconstruction"] if denoising else ["input", "reconstruction"]
    grid = Image.open(out / "images" / "reconstructions.png")
    # one batch of 4 per row, each image drawn 64 pixels (2 x 32), class names above, text sized for TensorBoard
    layout = labelled_grid(
        [(label, torch.zeros(4, 3, 32, 32)) for label in labels], column_labels="0123", readable_at=CARD_WIDTH
    )
    assert grid.mode == "RGB" and grid.size == (layout.shape[2], layout.shape[1])
    pixels = np.asarray(grid).astype(int)
    assert np.abs(pixels[:, :, 0] - pixels[:, :, 1]).max() > 50  # colour kept, not grey
    summary = (out / "model_summary.txt").read_text()
    assert summary.startswith("ConvAutoencoder in AutoencoderModule, input (1, 3, 32, 32)")
    net = ConvAutoencoder(in_channels=3)
    assert f"Total params: {sum(p.numel() for p in net.parameters()):,}" in summary
    assert re.search(r"Sigmoid \(7\)\s+\[1, 3, 32, 32\]", summary)


def test_classifier_run_writes_model_summary(make_cfg):
    cfg = make_cfg("model=cnn_base", *FAST)
    train(cfg)
    summary = (Path(cfg.paths.output_dir) / "model_summary.txt").read_text()
    net = instantiate_plain(cfg.model).net
    assert summary.startswith(f"{type(net).__name__} in ClassifierModule, input (1, 1, 28, 28)")
    assert f"Total params: {sum(p.numel() for p in net.parameters()):,}" in summary
    assert re.search(r"Linear \(\w+\)\s+\[1, 10\]", summary)  # the last layer gives the 10 class logits


def test_flowers_ae_is_the_reports_mlp_with_a_6_number_code_batch_20_on_24_pictures(make_cfg, flowers_root):
    cfg = make_cfg("experiment=flowers_ae", f"data.data_dir={flowers_root}", *FAST)
    assert cfg.data.batch_size == 20 and make_cfg("experiment=flowers_ae").trainer.max_epochs == 10_000
    assert cfg.data.image_ids == list(range(1, 25)) and cfg.data.image_size == 32
    assert cfg.data.channels == 1 and cfg.data.value_range == [-1.0, 1.0] == cfg.model.value_range
    datamodule = instantiate_plain(cfg.data)
    datamodule.setup("fit")
    assert len(datamodule.train_set) == len(datamodule.val_set) == 24  # the 24 pictures serve every split
    net = instantiate_plain(cfg.model).net
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    widths = [linears[0].in_features] + [m.out_features for m in linears]
    assert widths == [1024, 256, 64, 6, 64, 256, 1024]  # an MLP with a code of 6 numbers
    assert isinstance(net.decoder[-1], torch.nn.Tanh)  # outputs cover [-1, 1]
    train(cfg)
    out = Path(cfg.paths.output_dir)
    record = _record(cfg)
    assert record["status"] == "completed" and {"test/psnr", "test/ssim"} <= record["test"].keys()
    assert mse_is_a_quarter_of_the_loss(record["test"])
    assert (out / "images" / "latent_navigation.png").is_file()
    assert "MLPAutoencoder" in (out / "model_summary.txt").read_text()


def mse_is_a_quarter_of_the_loss(test: dict) -> bool:
    """The loss is the MSE of [-1, 1] images; the metrics see them in [0, 1]: a quarter of it."""
    return test["test/mse"] == pytest.approx(test["test/loss"] / 4, rel=1e-4)


def test_flowers_conv_ae_runs_with_metrics_in_unit_range_and_draws_the_latent_navigation(make_cfg, flowers_root):
    cfg = make_cfg("experiment=flowers_conv_ae", f"data.data_dir={flowers_root}", *FAST)
    assert cfg.model.value_range == [-1.0, 1.0] == cfg.model.net.value_range and cfg.model.net.latent_dim == 6
    assert cfg.data.image_ids == list(range(1, 25))  # the course24 preset
    train(cfg)
    out = Path(cfg.paths.output_dir)
    test = _record(cfg)["test"]
    assert mse_is_a_quarter_of_the_loss(test)
    navigation = np.asarray(Image.open(out / "images" / "latent_navigation.png").convert("L")).astype(float)
    # 7 x 7 pictures of 32 x 32 drawn 64 pixels, rows named "z[1] -2.0σ" ... "z[1] +2.0σ", the offsets of z[0] above
    labels = [f"z[1] {o}σ" for o in ("-2.0", "-1.3", "-0.7", "+0.0", "+0.7", "+1.3", "+2.0")]
    title = "image 0 (pink primrose): z[0] across, z[1] down, in standard deviations σ"
    offsets = [label.split()[1] for label in labels]
    rows = [(label, torch.zeros(7, 1, 32, 32)) for label in labels]
    layout = labelled_grid(rows, title=title, column_labels=offsets, readable_at=CARD_WIDTH)
    assert navigation.shape == layout.shape[1:]
    top, left = 2 * line_height() + GAP, text_width("z[1] -2.0σ") + 2 * MARGIN + GAP
    cell = navigation[top : top + 64, left : left + 64]
    assert 0 < cell.mean() < 255 and cell.std() > 2  # a decoded picture, not a blank square
    assert "ConvDenseAutoencoder" in (out / "model_summary.txt").read_text()


def test_a_model_for_another_value_range_is_refused(make_cfg, flowers_root):
    cfg = make_cfg("data=flowers", f"data.data_dir={flowers_root}", "model=ae", *FAST)
    with pytest.raises(ApaError, match=r"served in \[-1.0, 1.0\].*model expects \[0.0, 1.0\]"):
        train(cfg)


def test_latent_navigation_needs_a_dense_code(make_cfg):
    with pytest.raises(ApaError, match="navigation_steps=5 needs a model with a dense code"):
        train(make_cfg("callbacks.image_grids.navigation_steps=5", *FAST))
