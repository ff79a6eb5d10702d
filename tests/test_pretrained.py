"""--pretrained never downloads unless asked: weights come from files already on disk, checked
by the sha256 prefix in torchvision's file names; a missing or damaged file is a clear error."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from facegender.errors import FaceGenderError  # noqa: E402
from facegender.models.registry import build_model  # noqa: E402


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    return tmp_path / "checkpoints"


def test_missing_weights_say_how_to_get_them(hub):
    with pytest.raises(FaceGenderError, match="--pretrained download") as e:
        build_model("mobilenetv2", pretrained=True)
    assert str(hub) in str(e.value)


def test_a_damaged_weight_file_is_refused(hub):
    (hub / "mobilenet_v2-b0353104.pth").write_bytes(b"not the weights")
    with pytest.raises(FaceGenderError, match="sha256"):
        build_model("mobilenetv2", pretrained=True)


def test_weights_on_disk_are_used(hub, monkeypatch):
    """A file whose sha256 matches its torchvision name is loaded (weights_only: no code runs)."""
    import hashlib

    from facegender.models import pretrained

    net = build_model("mobilenetv2", pretrained=False, num_classes=1000)
    path = hub / "state.pth"
    torch.save(net.state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    import torchvision.models as tvm

    # Pretend torchvision's file has this content: rename both the enum URL and the file.
    w = tvm.MobileNet_V2_Weights.IMAGENET1K_V1
    monkeypatch.setattr(type(w), "url", property(lambda self: f"https://x/mobilenet_v2-{digest}.pth"))
    path.rename(hub / f"mobilenet_v2-{digest}.pth")
    assert pretrained.find_torchvision_weights("MobileNet_V2_Weights")[0].name.endswith(f"{digest}.pth")
    got = build_model("mobilenetv2", pretrained=True, num_classes=2)
    assert torch.equal(got.features[0][0].weight, net.features[0][0].weight)
