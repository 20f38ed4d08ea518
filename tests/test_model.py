"""The networks: shapes, the normalised descriptor, and what happens without ImageNet weights."""
import urllib.error

import pytest
import torch
from torchvision import models

from model import build_model, ft_net, verif_net
from reid.cli import UserError


@pytest.mark.parametrize("use_dense", [False, True])
def test_outputs(use_dense):
    net = build_model({"nclasses": 7, "use_dense": use_dense}).eval()
    logits, f = net(torch.randn(3, 3, 64, 32))
    assert logits.shape == (3, 7) and f.shape == (3, 512)
    torch.testing.assert_close(f.norm(dim=1), torch.ones(3))


def test_verification_head_scores_a_pair():
    verif = verif_net().eval()
    f1, f2 = torch.nn.functional.normalize(torch.randn(2, 4, 512), dim=2)
    out = verif(f1, f2)
    assert out.shape == (4, 2)
    torch.testing.assert_close(out, verif.classifier[1](f1 * f2))  # the square layer is x * y


def test_classifier_initialisation():
    net = ft_net(751, pretrained=False)
    linear = net.classifier.classifier[1]
    assert linear.weight.shape == (751, 512)
    assert 0.0005 < linear.weight.std().item() < 0.002 and linear.bias.abs().max() == 0


def test_unreachable_weights_say_how_to_go_on(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(models.ResNet50_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(UserError) as e:
        ft_net(10, pretrained=True)
    message = str(e.value)
    assert "--no-pretrained" in message and "resnet50-0676ba61.pth" in message and "TORCH_HOME" in message
