"""Feature store for the fused accurate candidate (models/fusion.py): every face of the named
sources through FaceRes' crop policy, then FaceResFusion.features (FaceRes-deep descriptor and
gender logit, the shipped accurate model's dlib features, logit and dlib classifier's logit), face
and mirror image, cached by training/features.py (resumable: rerun to continue).

    nice -n 5 python tools/extract_fusion_features.py --cache runs/fusion-store [--celeba-train N]

Order: evaluation sets and the small sources first, CelebA's train split last, so a run cut
short still leaves every other set complete.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from facegender.io.sources import Sample, read_source, stratified_limit
from facegender.models.faceres import load_faceres
from facegender.models.fusion import FaceResFusion, fusion_config_fields
from facegender.models.modelfile import ModelConfig, file_sha256, load_torch_model, shipped_model_dir
from facegender.training import features
from facegender.training.features import extract_features

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def sets(celeba_train: int, celeba_val: int, seed: int = 0, aaf_train: int | None = None,
         aaf_test: int | None = None) -> list[tuple[str, list[Sample]]]:
    """(name, samples) in extraction order."""
    def split(spec: Path, name: str, limit: int | None = None) -> list[Sample]:
        s = [x for x in read_source(spec).samples if x.split == name]
        return stratified_limit(s, limit, seed)

    cel = DATA / "celeba-gender" / "attributes.csv"
    return [
        ("fairface540", read_source(DATA / "fairface540" / "labels.csv").samples),
        ("kinfacew", read_source(DATA / "kinfacew" / "labels.csv").samples),
        ("fiw", read_source(DATA / "fiw" / "labels.csv").samples),
        ("celeba-val", split(cel, "val", celeba_val)),
        ("aaf-train", split(DATA / "aaf" / "labels.csv", "train", aaf_train)),
        ("aaf-test", split(DATA / "aaf" / "labels.csv", "test", aaf_test)),
        ("celeba-train", stratified_limit([s for s in split(cel, "train")
                                           if s.groups.get("disputed") != "1"], celeba_train, seed)),
    ]


def fusion_net() -> tuple[FaceResFusion, str]:
    """The fused network (its head untrained) and an id of the weights its features come from."""
    dlib, cfg = load_torch_model(shipped_model_dir("accurate"))
    if cfg.arch == "faceres_fusion":  # shipped since 2026-12-06: its dlib part is the earlier model
        dlib = dlib.dlib
    net = FaceResFusion(load_faceres(), dlib).eval()
    from facegender.models.faceres import WEIGHTS_FILE
    return net, file_sha256(WEIGHTS_FILE)[:16] + "+" + module_sha256(dlib)[:16]


def module_sha256(module: torch.nn.Module) -> str:
    """Hash of a module's tensors (names, shapes, float32 values): the dlib part's id, so refitting
    the shipped model's head, which leaves that part as it was, keeps the store valid."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(f"{name}{tuple(t.shape)}".encode())
        h.update(t.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


class _Features(torch.nn.Module):
    def __init__(self, net: FaceResFusion) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)


def ort_encoder(module: Callable[[], torch.nn.Module], path: Path, threads: int):
    """The network `module()` builds (one 224 px crop batch in, a tensor out) as an onnxruntime
    session, exported to `path` once (built only then; depthwise convolutions run about twice
    as fast as in torch on this CPU), fed one row at a time (the fastest here)."""
    import numpy as np
    import onnxruntime as ort

    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.onnx.export(module().eval(), torch.zeros(1, 3, 224, 224), str(path),
                          input_names=["x"], output_names=["f"], dynamic_axes={"x": {0: "n"}},
                          opset_version=17, dynamo=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def encode(x: torch.Tensor) -> torch.Tensor:
        xn = x.numpy()
        return torch.from_numpy(np.concatenate([sess.run(None, {"x": xn[i:i + 1]})[0]
                                                for i in range(len(xn))]))

    return encode


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default="runs/fusion-store")
    ap.add_argument("--celeba-train", type=int, default=15000, help="undisputed CelebA train "
                    "faces (the shipped head's store; 5000 before 2026-12-06, late)")
    ap.add_argument("--celeba-val", type=int, default=1500)
    ap.add_argument("--aaf-train", type=int, default=None, help="AAF train faces (default: all "
                    "10,137; 4000 before 2026-12-06, late)")
    ap.add_argument("--aaf-test", type=int, default=1000, help="a stratified subset (benchmarks/"
                    "accuracy.py scores all of it)")
    ap.add_argument("--views", type=int, default=1, help="1: the face; 2: and its mirror image")
    ap.add_argument("--only", nargs="*", help="set names to extract (default: all)")
    ap.add_argument("--limit", type=int, help="faces per set (a speed probe)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    features.CHUNK = 256  # smaller parts: a stopped run loses less (the store reads any size)
    net, wid = fusion_net()
    encode = ort_encoder(lambda: _Features(net), Path(a.cache) / "fusion-features.onnx", a.threads)
    cfg = ModelConfig(arch="faceres_fusion", **fusion_config_fields())
    for name, samples in sets(a.celeba_train, a.celeba_val, aaf_train=a.aaf_train,
                              aaf_test=a.aaf_test):
        if a.only and name not in a.only:
            continue
        samples = samples[:a.limit] if a.limit else samples
        t0 = time.perf_counter()
        fs = extract_features(samples, encode, cfg, a.cache, weights_id=wid,
                              encoder="faceres_fusion.features", views=a.views, batch_size=32,
                              workers=1, progress=False, what=name)
        print(f"{name}: {len(samples)} faces, {int(fs.ok.sum())} with features, "
              f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
