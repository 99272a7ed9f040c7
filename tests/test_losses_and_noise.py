import math

import pytest
import torch

from apa_lightning.errors import ApaError
from apa_lightning.models.autoencoder import AutoencoderModule
from apa_lightning.models.noise import check_noise, corrupt
from apa_lightning.models.vae import vae_loss

IDENTITY = {"_target_": "torch.nn.Identity"}
ADAM = {"_target_": "torch.optim.Adam", "lr": 1e-3}


def test_vae_loss_matches_a_hand_computation():
    x = torch.tensor([[[[1.0, 0.0]]], [[[0.5, 1.0]]]])  # two 1x1x2 images
    logits = torch.tensor([[[[0.0, 0.0]]], [[[2.0, -1.0]]]])
    mu = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    logvar = torch.tensor([[0.0, 0.0], [math.log(4.0), 0.0]])

    def bce(p, t):
        return -(t * math.log(p) + (1 - t) * math.log(1 - p))

    sig = [[0.5, 0.5], [1 / (1 + math.exp(-2)), 1 / (1 + math.exp(1))]]
    recon = [bce(sig[0][0], 1) + bce(sig[0][1], 0), bce(sig[1][0], 0.5) + bce(sig[1][1], 1)]
    # KL per dim: 0.5 * (sigma^2 + mu^2 - 1 - log sigma^2)
    kl = [0.5 * (1 + 1 - 1 - 0) + 0.0, 0.5 * (4 + 4 - 1 - math.log(4)) + 0.0]  # second dims: mu 0 / 1, var 1
    terms = vae_loss(logits, x, mu, logvar, beta=0.5)
    assert terms["recon"].item() == pytest.approx(sum(recon) / 2, rel=1e-5)
    assert terms["kl"].item() == pytest.approx(sum(kl) / 2, rel=1e-5)
    assert terms["loss"].item() == pytest.approx((sum(recon) + 0.5 * sum(kl)) / 2, rel=1e-5)
    assert terms["elbo"].item() == pytest.approx(-(sum(recon) + sum(kl)) / 2, rel=1e-5)

    mse = vae_loss(logits, x, mu, logvar, reconstruction="mse")["recon"].item()
    sq = [(sig[0][0] - 1) ** 2 + sig[0][1] ** 2, (sig[1][0] - 0.5) ** 2 + (sig[1][1] - 1) ** 2]
    assert mse == pytest.approx(sum(sq) / 2, rel=1e-5)


@pytest.mark.parametrize("kind", ["gaussian", "salt_and_pepper", "masking"])
def test_corrupt_changes_a_copy_by_the_level(kind):
    torch.manual_seed(0)
    x = torch.full((8, 3, 32, 32), 0.5)
    noisy = corrupt(x, kind, 0.2)
    assert torch.all(x == 0.5)  # the input is untouched
    assert noisy.min() >= 0 and noisy.max() <= 1
    changed = (noisy != x).float().mean().item()
    assert changed == pytest.approx(1.0 if kind == "gaussian" else 0.2, abs=0.02)
    if kind != "gaussian":  # whole pixels, all channels together
        assert torch.all((noisy != x).float().std(dim=1) == 0)


def test_corrupt_at_level_zero_is_the_identity():
    x = torch.rand(2, 1, 8, 8)
    for kind in ("gaussian", "salt_and_pepper", "masking"):
        assert torch.equal(corrupt(x, kind, 0.0), x)


@pytest.mark.parametrize("kind, level", [("speckle", 0.1), ("masking", 1.5), ("gaussian", -0.1)])
def test_bad_noise_settings_are_refused(kind, level):
    with pytest.raises(ApaError, match="noise"):
        check_noise(kind, level)


def test_denoising_autoencoder_corrupts_only_the_input():
    # identity network + masking everything: the input becomes all zeros, so the loss against the
    # clean target is mean(x^2); had the target been corrupted too, it would be 0.
    module = AutoencoderModule(net=IDENTITY, optimizer=ADAM, noise={"kind": "masking", "level": 1.0})
    x = torch.rand(4, 1, 6, 6) + 0.1
    clean = x.clone()
    loss, x_hat = module._step((x, torch.zeros(4)), "train")
    assert torch.equal(x, clean)
    assert torch.all(x_hat == 0)
    assert loss.item() == pytest.approx(clean.pow(2).mean().item())
    rows = module.grid_rows(x)
    assert list(rows) == ["input", "noisy input (masking 1)", "reconstruction"]
    assert torch.equal(rows["input"], clean) and torch.all(rows["noisy input (masking 1)"] == 0)


def test_test_noise_levels_without_noise_is_refused():
    with pytest.raises(ApaError, match="model=dae"):
        AutoencoderModule(net=IDENTITY, optimizer=ADAM, test_noise_levels=[0.1])
