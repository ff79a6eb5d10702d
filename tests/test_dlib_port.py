"""The PyTorch port of dlib's face-recognition ResNet gives dlib's own descriptors on real faces,
read from the .dat by our pure-Python parser; the numpy port of dlib's 5-point landmark model
finds dlib's points, and the dlib5 crop policy cuts dlib's chips; the parser refuses files it
does not know."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from conftest import DATA, need_data
from PIL import Image

torch = pytest.importorskip("torch")
dlib = pytest.importorskip("dlib", reason="dlib-bin (the [dev] extra) verifies the port")

from facegender.faces import CropPolicy, FaceDetector, crop_face, detect_and_crop  # noqa: E402
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

MEDIAN_MAX, MAX_MAX = 0.1, 0.25
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
    """Same face, our crop (DLIB_CROP: BlazeFace's box, dlib's five landmarks found in it by the
    numpy port, onto get_face_chip's targets) vs dlib's own chip from dlib's HOG box: descriptors
    far closer than dlib's same-person distance of 0.6."""
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
    # Measured: the 12 faces dlib HOG finds once give distances 0.04-0.15, median 0.06 (with
    # BlazeFace's keypoints onto the old 4-point template: 0.08-0.24, median 0.13; dlib: under
    # 0.6 means the same person). The boxes differ (BlazeFace vs HOG), so the points do a little.
    assert np.median(dist) < MEDIAN_MAX and max(dist) < MAX_MAX, dist


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


def _blazeface_faces(n_each: int = 15):
    detector = FaceDetector()
    for name, img in _faces(n_each):
        faces = detector.detect(Image.fromarray(img))
        if faces:
            yield name, img, faces[0]


def test_landmark_port_finds_dlibs_points(dlib_models):
    """Same image, same box: the numpy cascade gives dlib's five points. dlib rounds each point
    to a pixel; float rounding in the similarity transform moves a rare point across a pixel
    boundary, so a point may differ by one pixel, never more."""
    from facegender.faces.landmarks import with_dlib5

    _, shapes, _ = dlib_models
    diffs = []
    for name, img, face in _blazeface_faces():
        x, y, w, h = face.box
        rect = dlib.rectangle(round(x), round(y), round(x + w) - 1, round(y + h) - 1)
        ref = np.array([[p.x, p.y] for p in shapes(img, rect).parts()], float)
        ours = with_dlib5(Image.fromarray(img), face).landmarks
        assert ours.shape == (5, 2), name
        diffs.append(np.abs(np.floor(ours + 0.5) - ref))
    d = np.concatenate(diffs)
    assert len(diffs) >= 25
    # Measured on 59 fairface540 faces: 96.6% of the faces exact, the rest 1 px.
    assert d.max() <= 1 and (d == 0).all(1).mean() >= 0.9, d


def test_dlib5_policy_cuts_dlibs_chip(dlib_models, port):
    """Our crop with the dlib5 policy vs dlib.get_face_chip(size=150, padding=0.25) on dlib's
    landmarks in the same box: nearly the same pixels and descriptors."""
    _, shapes, _ = dlib_models
    policy = CropPolicy.from_dict(DLIB_CROP)
    cos, pix = [], []
    for _name, img, face in _blazeface_faces():
        x, y, w, h = face.box
        rect = dlib.rectangle(round(x), round(y), round(x + w) - 1, round(y + h) - 1)
        ref = dlib.get_face_chip(img, shapes(img, rect), size=150, padding=0.25)
        ours = np.asarray(crop_face(Image.fromarray(img), face, policy, size=(150, 150)))
        cos.append(_cos(_embed(port, Image.fromarray(ref)), _embed(port, Image.fromarray(ours))))
        pix.append(np.abs(ref.astype(int) - ours.astype(int)).mean())
    # Measured on 39 fairface540 faces: cosine min 0.9977, median 0.9993; mean absolute pixel
    # difference median 2.2 (resampling: dlib blurs through a pyramid, we resize with PIL).
    assert min(cos) >= 0.995 and np.median(cos) >= 0.998, cos
    assert np.median(pix) < 3.5, pix


def test_shipped_landmark_file_is_dlibs_model_converted():
    from safetensors import safe_open

    from facegender.faces.landmarks import WEIGHTS
    from facegender.models.dlib_format import (
        DLIB_LANDMARKS5_FILE,
        DLIB_LANDMARKS5_SHA256,
        read_shape_predictor,
    )

    arrays, meta = read_shape_predictor(package_dir("face_recognition_models") / "models"
                                        / DLIB_LANDMARKS5_FILE)
    with safe_open(str(WEIGHTS), "np") as fh:
        assert fh.metadata()["source_sha256"] == DLIB_LANDMARKS5_SHA256 == meta["source_sha256"]
        assert sorted(fh.keys()) == sorted(arrays)
        for k, v in arrays.items():
            assert np.array_equal(fh.get_tensor(k), v), k


def test_landmark_policy_is_checked():
    from facegender.errors import FaceGenderError

    with pytest.raises(FaceGenderError, match="needs a template of 5 points"):
        CropPolicy.from_dict({"landmarks": "dlib5"})
    with pytest.raises(FaceGenderError, match="landmarks must be one of"):
        CropPolicy.from_dict({"landmarks": "dlib68", "template": DLIB_CROP["template"]})
    with pytest.raises(FaceGenderError, match="must be 5 distinct"):
        CropPolicy.from_dict({**DLIB_CROP, "template": DLIB_CROP["template"][:4]})
