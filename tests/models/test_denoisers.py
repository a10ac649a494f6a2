from __future__ import annotations

import pytest
import torch

from advkit.errors import CheckpointError, UnknownNameError
from advkit.models import (
    DENOISER_ARCHS,
    FiltDenoiser,
    MultiHeadFiltDenoiser,
    PAFilt,
    create_denoiser,
    eps_to_head,
    load_denoiser,
    save_denoiser,
)
from advkit.ops import kernel_filter


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Perturb every parameter so outputs are not the identity-initialised ones."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.01)
    return model


@pytest.mark.parametrize("arch", DENOISER_ARCHS)
@pytest.mark.parametrize("size", [(33, 29), (7, 5), (32, 32)])
def test_output_shape_any_size(arch, size):
    model = _randomize(create_denoiser(arch, width=4)).eval()
    x = torch.rand(2, 3, *size)
    y = model(x)
    assert y.shape == x.shape
    assert y.min() >= 0 and y.max() <= 1  # eval mode clamps


@pytest.mark.parametrize("arch", DENOISER_ARCHS)
def test_initialised_to_identity(arch):
    """Kernel heads start at the identity kernel and the additive head at zero: output = input."""
    model = create_denoiser(arch, width=4).eval()
    x = torch.rand(2, 3, 17, 19)
    torch.testing.assert_close(model(x), x, atol=1e-6, rtol=0)


def test_filt_with_identity_kernel_returns_input_exactly():
    x = torch.rand(2, 3, 9, 11)
    k = torch.zeros(2, 3 * 25, 9, 11)
    k[:, [12, 37, 62]] = 1.0
    assert torch.equal(kernel_filter(x, k), x)
    model = FiltDenoiser(width=4, padding="zeros").eval()
    assert torch.equal(model(x), x)


def test_training_mode_does_not_clamp():
    model = _randomize(create_denoiser("unet-add", width=4), seed=3).train()
    with torch.no_grad():
        model.head.out.bias.fill_(0.7)
    x = torch.full((1, 3, 16, 16), 0.5)
    assert model(x).max() > 1.0
    assert model(x, clamp=True).max() <= 1.0


def test_multihead_routing_by_decade():
    eps = torch.tensor([1e-4, 3e-4, 5e-4, 1e-3, 5e-3, 1e-2, 3e-2, 5e-2, 1e-1, 3e-1, 5e-1, 0.0])
    assert eps_to_head(eps).tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 3, 0]
    model = _randomize(MultiHeadFiltDenoiser(width=4)).eval()
    x = torch.rand(3, 3, 16, 16)
    routed = model(x, eps=torch.tensor([1e-4, 1e-2, 0.3]))
    for i, h in enumerate([0, 2, 3]):
        torch.testing.assert_close(routed[i : i + 1], model(x[i : i + 1], head=h))
    with pytest.raises(ValueError, match="head"):
        model(x, head=4)


def test_pafilt_parts_and_fusion():
    model = _randomize(PAFilt(width=4)).eval()
    x = torch.rand(2, 3, 13, 15)
    parts = model.forward_all(x)
    assert parts["uncertainty"].shape == (2, 2, 13, 15) and parts["weight"].shape == (2, 1, 13, 15)
    w = parts["weight"]
    assert torch.all((w > 0) & (w < 1))
    expected = (w * model.forward_all(x, clamp=False)["sl"] + (1 - w) * model.forward_all(x, clamp=False)["m"]).clamp(0, 1)
    torch.testing.assert_close(parts["out"], expected)
    # uncertainty = max over each pixel's 3K² kernel values
    xp = torch.nn.functional.pad(x, (0, 1, 0, 3), mode="replicate")
    _, _, k_sl, _ = model.branches(xp)
    torch.testing.assert_close(parts["uncertainty"][:, :1], k_sl.amax(1, keepdim=True)[..., :13, :15])


def test_fusion_net_reads_its_input_at_initialisation():
    """The untrained fusion net's weight map must depend on the uncertainty maps: with PyTorch's
    default init the signal died over the six layers (std of W across inputs 5e-4) and training
    never recovered it."""
    from advkit.models.denoisers import FusionNet

    torch.manual_seed(0)
    fusion = FusionNet(32)
    maps = torch.rand(16, 2, 16, 16) * 0.6 + 0.3
    with torch.no_grad():
        change = (fusion(maps) - fusion(torch.full_like(maps, 0.6))).abs().mean()
    assert change > 0.02


@pytest.mark.parametrize("arch", DENOISER_ARCHS)
def test_save_load_round_trip(arch, tmp_path):
    model = _randomize(create_denoiser(arch, width=4)).eval()
    path = save_denoiser(model, tmp_path / "ck")
    assert path.name == "ck.safetensors" and (tmp_path / "ck.json").is_file()
    x = torch.rand(2, 3, 21, 23)
    for ref in (path, tmp_path / "ck.json", tmp_path / "ck"):
        loaded = load_denoiser(ref)
        assert type(loaded) is type(model)
        assert torch.equal(loaded(x), model(x))
    # the weights file alone is enough: the config is embedded in its metadata
    (tmp_path / "ck.json").unlink()
    assert torch.equal(load_denoiser(path)(x), model(x))


def test_bad_checkpoints_fail_cleanly(tmp_path):
    model = create_denoiser("unet-filt", width=4)
    path = save_denoiser(model, tmp_path / "ck")
    with pytest.raises(CheckpointError, match="not kpn"):
        load_denoiser(path, arch="kpn")
    data = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "trunc.json").write_text((tmp_path / "ck.json").read_text())
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_denoiser(tmp_path / "trunc.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(data)
    (tmp_path / "bad.json").write_text('{"config": {"arch": "unet-filt", "width": 8}}')
    with pytest.raises(CheckpointError, match=r"do not fit the unet-filt config: \d+ of another shape"):
        load_denoiser(tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        load_denoiser(tmp_path / "missing.safetensors")
    (tmp_path / "latin.safetensors").write_bytes(data)
    (tmp_path / "latin.json").write_bytes(b"\xff\xfe not UTF-8")
    with pytest.raises(CheckpointError, match="latin.json: not valid JSON"):
        load_denoiser(tmp_path / "latin.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError):
        load_denoiser(tmp_path / "junk.safetensors")


def test_unknown_arch():
    with pytest.raises(UnknownNameError, match="unet-filt"):
        create_denoiser("unet-blur")


def test_pafilt_fusion_input_options():
    """``uncertainty+image``: the fusion net reads [U_sl, U_m, Î] (5 channels); an old config without the
    key builds the paper's 2-channel fusion net; anything else is a ValueError."""
    torch.manual_seed(0)
    paper = PAFilt(width=4)
    with_image = PAFilt(width=4, fusion_input="uncertainty+image")
    assert paper.fusion.net[0].in_channels == 2 and with_image.fusion.net[0].in_channels == 5
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        parts = with_image.forward_all(x)
        xp = x  # 16 × 16 needs no padding
        cues = torch.cat([parts["uncertainty"], xp], 1)
        torch.testing.assert_close(parts["weight"], with_image.fusion(cues))
    with pytest.raises(ValueError, match="fusion_input"):
        PAFilt(width=4, fusion_input="image")


def test_a_checkpoint_that_cannot_be_written_is_an_output_error(tmp_path, monkeypatch):
    import safetensors.torch

    from advkit.errors import OutputError

    def full_disk(*args, **kwargs):
        raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(OutputError, match=r"cannot write .*ck.safetensors: .*No space left on device"):
        save_denoiser(create_denoiser("unet-filt", width=4), tmp_path / "ck")
    assert list(tmp_path.iterdir()) == []
