"""The PyTorch port of dlib's face-recognition ResNet gives dlib's own descriptors on real faces,
read from the .dat by our pure-Python parser; our BlazeFace template alignment frames faces as
dlib's aligner does; the parser refuses files it does not know."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from conftest import DATA, need_data
from PIL import Image

torch = pytest.importorskip("torch")
dlib = pytest.importorskip("dlib", reason="dlib-bin (the [dev] extra) verifies the port")

from facegender.faces import CropPolicy, FaceDetector, detect_and_crop  # noqa: E402
from facegender.infer.preprocess import to_array  # noqa: E402
from facegender.models.dlib_format import DlibFormatError, read_dlib_resnet  # noqa: E402
from facegender.models.dlib_resnet import (  # noqa: E402
    DLIB_CROP,
    DLIB_MEAN,
    DLIB_STD,
    DlibFaceResNet,
    DlibGenderNet,
    dlib_state_dict,
)
from facegender.models.modelfile import ModelConfig  # noqa: E402
from facegender.models.pretrained import find_dlib_resnet, package_dir  # noqa: E402

CFG = ModelConfig(arch="dlib_resnet", input_size=150, mean=DLIB_MEAN, std=DLIB_STD, crop=DLIB_CROP)


def _faces(n_each: int = 8) -> list[tuple[str, np.ndarray]]:
    need_data()
    out = []
    for tar_path, step in ((DATA / "fairface540" / "fairface540.tar", 37),
                           (DATA / "aaf" / "aaf.tar", 997)):
        with tarfile.open(tar_path) as tf:
            members = [m for m in tf.getmembers() if m.isfile() and m.name.endswith(".jpg")]
            for m in members[::step][:n_each]:
                img = Image.open(io.BytesIO(tf.extractfile(m).read())).convert("RGB")
                out.append((m.name, np.asarray(img)))
    return out


@pytest.fixture(scope="module")
def dlib_models():
    models = package_dir("face_recognition_models") / "models"
    return (dlib.face_recognition_model_v1(str(find_dlib_resnet())),
            dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat")),
            dlib.get_frontal_face_detector())


@pytest.fixture(scope="module")
def port() -> DlibFaceResNet:
    net = DlibFaceResNet()
    net.load_state_dict(dlib_state_dict()[0])
    return net.eval()


def _embed(net: DlibFaceResNet, chip: Image.Image) -> np.ndarray:
    with torch.inference_mode():
        return net(torch.from_numpy(to_array(chip, CFG))[None]).numpy()[0]


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_port_matches_dlib_on_real_faces(dlib_models, port):
    facerec, shapes, hog = dlib_models
    cos, chips = [], 0
    for _name, img in _faces():
        rects = hog(img, 1)
        rect = rects[0] if rects else dlib.rectangle(0, 0, img.shape[1] - 1, img.shape[0] - 1)
        chip = dlib.get_face_chip(img, shapes(img, rect), size=150, padding=0.25)
        ref = np.array(facerec.compute_face_descriptor(chip, num_jitters=0))
        cos.append(_cos(ref, _embed(port, Image.fromarray(chip))))
        chips += 1
    assert chips == 16
    assert min(cos) >= 0.9999, cos


def test_template_alignment_frames_faces_like_dlib(dlib_models, port):
    """Same face, our crop (BlazeFace keypoints onto DLIB_TEMPLATE) vs dlib's own aligned chip:
    descriptors far closer than dlib's same-person distance of 0.6."""
    facerec, shapes, hog = dlib_models
    detector, policy = FaceDetector(), CropPolicy.from_dict(DLIB_CROP)
    dist = []
    for _name, img in _faces():
        rects = hog(img, 1)
        if len(rects) != 1:
            continue
        ref = np.array(facerec.compute_face_descriptor(
            dlib.get_face_chip(img, shapes(img, rects[0]), size=150, padding=0.25)))
        found = detect_and_crop(Image.fromarray(img), detector, policy, largest=True)
        assert found, _name
        dist.append(float(np.linalg.norm(ref - _embed(port, found[0][1]))))
    assert len(dist) >= 10, dist
    # Measured: the 12 faces dlib HOG finds once give distances 0.08-0.24, median 0.13
    # (dlib: under 0.6 means the same person).
    assert np.median(dist) < 0.2 and max(dist) < 0.4, dist


def test_gender_net_is_the_backbone_plus_a_head(port):
    net = DlibGenderNet(pretrained=True).eval()
    x = torch.randn(2, 3, 150, 150)
    with torch.inference_mode():
        assert torch.allclose(net.backbone.features(x), port.features(x))
        assert net(x).shape == (2, 2)
    assert net.pretrained_from["source_sha256"].startswith("55533b28")


def test_parser_refuses_other_files(tmp_path):
    good = find_dlib_resnet().read_bytes()
    bad = tmp_path / "truncated.dat"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(DlibFormatError, match="sha256"):
        read_dlib_resnet(bad)
    with pytest.raises(DlibFormatError, match="unexpected end of file"):
        read_dlib_resnet(bad, sha256=None)
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"\x01\x01" + b"\x07loss_xx" + b"\0" * 64)
    with pytest.raises(DlibFormatError):
        read_dlib_resnet(junk, sha256=None)
