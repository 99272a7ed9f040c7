import pytest
import torch
from torch import nn

from apa_lightning.nets.conv_ae import ConvAutoencoder
from apa_lightning.nets.conv_vae import ConvVAE


def _layers(module: nn.Module, kind: type) -> list[tuple]:
    return [
        (m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding) for m in module.modules() if type(m) is kind
    ]


def test_conv_autoencoder_has_the_reports_layers():
    net = ConvAutoencoder(in_channels=1)
    k = (3, 3)
    assert _layers(net.encoder, nn.Conv2d) == [
        (1, 8, k, (2, 2), (1, 1)),
        (8, 32, k, (1, 1), (1, 1)),
        (32, 64, k, (1, 1), (1, 1)),
        (64, 128, k, (1, 1), (1, 1)),
        (128, 16, k, (1, 1), (1, 1)),
    ]
    assert [(c[0], c[1]) for c in _layers(net.decoder, nn.ConvTranspose2d)] == [
        (16, 128),
        (128, 64),
        (64, 32),
        (32, 8),
        (8, 1),
    ]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 10
    assert sum(isinstance(m, nn.ELU) for m in net.modules()) == 9
    assert isinstance(net.decoder[-1], nn.Sigmoid) and isinstance(net.decoder[-4], nn.Upsample)
    # the reports' output: ConvT(8,c) -> BN(c) -> Sigmoid
    assert [type(m) for m in net.decoder[-3:]] == [nn.ConvTranspose2d, nn.BatchNorm2d, nn.Sigmoid]
    assert [type(m) for m in ConvAutoencoder(output_batchnorm=True).modules()] == [type(m) for m in net.modules()]


def test_conv_autoencoder_without_output_batchnorm_feeds_the_last_convolution_to_the_sigmoid():
    report, net = ConvAutoencoder(in_channels=3), ConvAutoencoder(in_channels=3, output_batchnorm=False)
    assert [type(m) for m in net.decoder[-3:]] == [nn.Upsample, nn.ConvTranspose2d, nn.Sigmoid]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 9
    # every other layer is the report's, so only the output BN's weight, bias and running statistics are missing
    missing = set(report.state_dict()) - set(net.state_dict())
    assert missing == {
        f"decoder.6.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    }
    assert set(net.state_dict()) < set(report.state_dict())


@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32)])
def test_conv_autoencoder_code_is_half_resolution_and_output_matches_input(channels, size):
    net = ConvAutoencoder(in_channels=channels).eval()
    x = torch.rand(2, channels, size, size)
    assert net.encoder(x).shape == (2, 16, size // 2, size // 2)
    out = net(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("channels, size, hidden", [(1, 28, (32, 64)), (3, 32, (16, 32, 64))])
def test_conv_vae_shapes(channels, size, hidden):
    net = ConvVAE(in_channels=channels, image_size=size, latent_dim=5, hidden_channels=hidden)
    logits, mu, logvar = net(torch.rand(4, channels, size, size))
    assert logits.shape == (4, channels, size, size)
    assert mu.shape == logvar.shape == (4, 5)
    assert net.decode(torch.zeros(3, 5)).shape == (3, channels, size, size)


def test_conv_vae_rejects_image_size_it_cannot_halve():
    with pytest.raises(ValueError, match="divisible by 4"):
        ConvVAE(image_size=30)


def test_reparameterize_has_the_posterior_mean_and_std():
    torch.manual_seed(0)
    mu, logvar = torch.full((20000, 1), 2.0), torch.full((20000, 1), torch.log(torch.tensor(0.25)).item())
    z = ConvVAE.reparameterize(mu, logvar)
    assert z.mean().item() == pytest.approx(2.0, abs=0.02)
    assert z.std().item() == pytest.approx(0.5, abs=0.02)
