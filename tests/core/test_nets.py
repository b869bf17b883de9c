"""The UNet: shapes at two resolutions, exact rebuild from its config, input checks."""

import pytest
import torch

from diffsci.core import UNet
from diffsci.core.config import from_config


def _net() -> UNet:
    torch.manual_seed(0)
    net = UNet(in_channels=1, channels=(8, 16, 16), emb_dim=16, groups=4, attention=True)
    with torch.no_grad():  # the output convolution starts at zero: give it weights
        for p in net.conv_out.parameters():
            p.normal_(0.0, 0.1)
    return net.eval()


@pytest.mark.parametrize("size", [32, 64])
def test_unet_keeps_the_shape_at_any_divisible_size(size):
    """Fully convolutional: a net for 32x32 patches also runs on 64x64 images."""
    net = _net()
    x = torch.randn(3, 1, size, size)
    t = torch.tensor([0.1, 0.5, 0.9])
    with torch.no_grad():
        y = net(x, t)
    assert y.shape == x.shape and bool(torch.isfinite(y).all())
    assert y.std() > 0


def test_unet_rebuilt_from_its_config_gives_identical_outputs():
    net = _net()
    twin = from_config(net.config()).eval()
    twin.load_state_dict(net.state_dict())
    assert twin.config() == net.config()
    x, t = torch.randn(2, 1, 32, 32), torch.tensor([0.3, 0.7])
    with torch.no_grad():
        assert torch.equal(twin(x, t), net(x, t))


def test_unet_depends_on_time_and_starts_at_zero():
    net = _net()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(net(x, torch.tensor([0.1])), net(x, torch.tensor([0.9])))
        assert torch.equal(
            UNet(channels=(8, 16), groups=4)(x, torch.tensor([0.5])), torch.zeros_like(x)
        )


def test_unet_refuses_bad_input():
    net = _net()
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.randn(1, 1, 30, 32), torch.tensor([0.5]))
    with pytest.raises(ValueError, match="B, C, H, W"):
        net(torch.randn(1, 32, 32), torch.tensor([0.5]))
    with pytest.raises(ValueError, match="positive integer"):
        UNet(channels=(8, 0))
