import pytest
import torch
from torch import nn

from apa_lightning.errors import ApaError
from apa_lightning.nets.backbones import alexnet, resnet18, vgg16
from apa_lightning.nets.cnn import CNNV2, CNNV3, CNNBase
from apa_lightning.nets.pretrained import TORCHVISION_NETS, cached_weights_file, torchvision_net

from .conftest import fill_value


def trainable(net: nn.Module) -> set[str]:
    return {name for name, p in net.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("cls", [CNNBase, CNNV2, CNNV3])
@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32), (3, 64)])
def test_report_cnns_give_one_logit_per_class(cls, channels, size):
    net = cls(num_classes=7, in_channels=channels, image_size=size).eval()
    assert net(torch.rand(2, channels, size, size)).shape == (2, 7)


def test_report_cnns_have_the_reports_filters():
    def filters(net):
        return [m.out_channels for m in net.features.modules() if isinstance(m, nn.Conv2d)]

    assert filters(CNNBase()) == [8, 32, 16]
    assert filters(CNNV2()) == [16, 32, 64, 128]
    v3 = CNNV3()
    assert filters(v3) == [16, 32, 64, 128, 512]  # V2's blocks plus a fifth of 512
    assert [m.p for m in v3.features.modules() if isinstance(m, nn.Dropout)] == [0.2, 0.3, 0.4, 0.4, 0.5]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in v3.modules()) == 5
    assert [m.p for m in CNNV2().classifier.modules() if isinstance(m, nn.Dropout)] == [0.4]


@pytest.mark.parametrize("builder", [vgg16, resnet18])
@pytest.mark.parametrize("channels", [1, 3])
def test_torchvision_networks_take_the_data_channels_and_classes(builder, channels):
    net = builder(num_classes=10, in_channels=channels).eval()
    assert net(torch.rand(2, channels, 32, 32)).shape == (2, 10)


def test_vgg16_classifier_widths_are_configurable():
    net = vgg16(num_classes=10, hidden_widths=[2048, 2048, 2048], dropout=0.3)
    linears = [m for m in net.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(25088, 2048), (2048, 2048), (2048, 2048), (2048, 10)]
    assert {m.p for m in net.classifier if isinstance(m, nn.Dropout)} == {0.3}


@pytest.mark.parametrize("builder, head", [(vgg16, "classifier"), (resnet18, "fc")])
def test_freezing_features_leaves_only_the_head_trainable(builder, head):
    net = builder(num_classes=10, freeze="features")
    assert trainable(net) and all(name.startswith(f"{head}.") for name in trainable(net))
    assert trainable(builder(num_classes=10)) == {name for name, _ in net.named_parameters()}
    with pytest.raises(ApaError, match="freeze='backbone'"):
        builder(num_classes=10, freeze="backbone")


def test_pretrained_weights_load_from_torchvisions_cache(fake_imagenet_weights, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(fake_imagenet_weights))
    net = resnet18(num_classes=10, pretrained=True)
    assert torch.all(net.conv1.weight == fill_value(0))  # conv1.weight is the first tensor of the state dict
    assert net.fc[1].out_features == 10
    # grey inputs: the pretrained filters are summed over the colour channels
    grey = vgg16(num_classes=10, in_channels=1, pretrained=True)
    assert torch.allclose(grey.features[0].weight, torch.full_like(grey.features[0].weight, 3 * fill_value(0)))
    assert torch.all(grey.classifier[0].weight == fill_value(26))  # kept pretrained hidden layer


def test_weights_path_is_used_instead_of_the_cache(fake_imagenet_weights, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(fake_imagenet_weights))
    copy = tmp_path / "mine.pth"
    copy.write_bytes(cached_weights_file("resnet18").read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    assert torch.all(resnet18(pretrained=True, weights_path=str(copy)).conv1.weight == fill_value(0))
    with pytest.raises(ApaError, match="weights_path=.*is not a file"):
        resnet18(pretrained=True, weights_path=str(tmp_path / "missing.pth"))


def test_missing_weights_without_network_name_the_file_url_and_ways_out(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache; the download fails (see conftest)
    with pytest.raises(ApaError) as err:
        torchvision_net("vgg16", pretrained=True)
    message = str(err.value)
    assert str(tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth") in message
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in message
    assert "weights_path" in message and "pretrained=false" in message


@pytest.mark.parametrize("content", ["garbage", "truncated", "empty", "other network"])
def test_a_damaged_or_wrong_cached_weights_file_is_named_with_the_way_out(
    fake_imagenet_weights, tmp_path, monkeypatch, content
):
    good = (fake_imagenet_weights / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth").read_bytes()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = cached_weights_file("alexnet")
    cached.parent.mkdir(parents=True)
    if content == "other network":
        torch.save(nn.Linear(3, 2).state_dict(), cached)
    else:
        cached.write_bytes({"garbage": b"\x80\x02garbage", "truncated": good[: len(good) // 2], "empty": b""}[content])
    with pytest.raises(ApaError) as err:
        alexnet(pretrained=True)
    message = str(err.value)
    assert message.startswith(str(cached))
    url = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
    assert f"expected torchvision's alexnet ImageNet weights ({url})" in message
    assert "Delete it and run again to download it anew" in message and "weights_only" not in message
    if content == "other network":
        assert "missing: classifier.1.bias" in message and "unexpected: bias, weight (2)" in message


def test_a_weights_path_of_another_network_names_the_key_and_the_file(fake_imagenet_weights, monkeypatch):
    from apa_lightning.nets.fusion import MiddleFusion

    monkeypatch.setenv("TORCH_HOME", str(fake_imagenet_weights))
    resnet_file = cached_weights_file("resnet18")
    with pytest.raises(ApaError, match=f"{resnet_file} does not hold weights for alexnet .*missing: classifier") as err:
        alexnet(pretrained=True, weights_path=str(resnet_file))
    url = TORCHVISION_NETS["alexnet"][1].url
    assert str(err.value).endswith(
        f"alexnet ImageNet weights ({url}). Point model.net.weights_path at a good copy of that file."
    )
    with pytest.raises(ApaError, match="Point model.net.mobilenet_weights_path at a good copy"):
        MiddleFusion(mobilenet_weights_path=str(resnet_file))
