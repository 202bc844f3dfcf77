"""medkit.cxr.efficientnet_lite against timm's EfficientNet-Lite (the reference it replaces at run time)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from medkit.cxr.efficientnet_lite import EfficientNetLite, make_divisible
from medkit.cxr.encoders import lite0_imagenet_state

timm = pytest.importorskip("timm")
BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def _timm_backbone_state(name: str) -> tuple[dict[str, torch.Tensor], torch.nn.Module]:
    torch.manual_seed(0)
    net = timm.create_model(name, pretrained=False)
    # random BatchNorm statistics, so that a mismatch in eval mode cannot hide behind mean 0 / var 1
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return {k: v for k, v in net.state_dict().items() if not k.startswith("classifier")}, net


@pytest.mark.parametrize("name", BACKBONES)
def test_same_parameter_names_shapes_and_order_as_timm(name):
    ref, _ = _timm_backbone_state(name)
    ours = EfficientNetLite(name).state_dict()
    assert list(ours) == list(ref)
    assert [tuple(v.shape) for v in ours.values()] == [tuple(v.shape) for v in ref.values()]


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_same_outputs_as_timm(name, train):
    ref, net = _timm_backbone_state(name)
    ours = EfficientNetLite(name)
    ours.load_state_dict(ref)
    net.train(train), ours.train(train)
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), net.forward_features(x), rtol=0, atol=1e-5)


def test_packaged_imagenet_weights_give_timm_outputs():
    state = lite0_imagenet_state()
    ours, net = EfficientNetLite("efficientnet_lite0").eval(), timm.create_model("efficientnet_lite0").eval()
    ours.load_state_dict(state)
    net.load_state_dict(state, strict=False)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), net.forward_features(x), rtol=0, atol=1e-5)


def test_make_divisible():
    assert [make_divisible(c * 1.1) for c in (16, 24, 40, 80, 112, 192, 320)] == [16, 24, 48, 88, 120, 208, 352]
    assert make_divisible(4) == 8


def test_unknown_backbone_is_named():
    with pytest.raises(ValueError, match="efficientnet_b9"):
        EfficientNetLite("efficientnet_b9")


def test_report_model_does_not_import_timm_or_torchvision():
    # timm imports torchvision and torch._dynamo (3.5 s), a third of one `medkit generate`
    code = ("import sys; from medkit.cxr.model import MedKitCXR; from medkit.cxr.encoders import CXREncoder; "
            "from medkit.cxr.config import EncoderConfig; CXREncoder(EncoderConfig(), 'student'); "
            "print(sorted(m for m in ('timm', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
