"""Export a model folder for fast, torch-free inference: ONNX fp32, ONNX INT8, TorchScript.

Files are written next to config.json (model.onnx, model.int8.onnx, model.torchscript.pt), so the
Predictor's 'auto' backend finds them. Every export is checked against the torch model on real
held-out faces before it is put in place; the parity figures are recorded in config.json under
metrics["export"][format]. Outputs keep the model's class order (config.json "labels"): logits
come out exactly as torch computes them and the temperature is applied by the Predictor.

Choices measured on this project's MobileNetV3-Small (2-core AVX2 CPU without VNNI):
- ONNX via the torch.export-based ("dynamo") exporter, opset 18: the same 122-node graph as the
  deprecated TorchScript-based exporter, at the same speed. The legacy exporter is kept only as a
  fallback for models torch.export cannot capture.
- INT8: static QDQ, per-channel int8 weights, uint8 activations, ranges from the 99.99th
  percentile of activations on training faces. Signed int8 activations ran 3-4x slower than
  fp32 on this CPU (MLAS has no fast s8s8 path without VNNI). reduce_range (7-bit weights)
  avoids the u8s8 saturation of the VPMADDUBSW instruction on AVX2/AVX-512 CPUs without VNNI;
  on all 11,649 celeba val faces it agreed with fp32 within one face of 8-bit weights.
  The high-resolution front (output stride <= 8) stays fp32: it holds few weights but its
  quantization errors caused most label flips.
- Parity also reports label agreement on the faces the model labels outright (outside its
  unsure band): INT8 flips only faces that are reported as unsure anyway.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FaceGenderError, ImageError, require
from ..io.images import decode_bytes
from ..io.sources import Sample, read_source, stratified_limit
from ..models import modelfile
from ..models.modelfile import ModelConfig
from ..models.pretrained import sha256_file
from .preprocess import softmax, to_array

FORMATS = ("onnx", "int8", "torchscript")
TORCHSCRIPT_NAME = "model.torchscript.pt"
FILE_NAMES = {"onnx": modelfile.ONNX_NAME, "int8": modelfile.ONNX_INT8_NAME,
              "torchscript": TORCHSCRIPT_NAME}
OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# fp32 exports must match torch to rounding error; anything larger means a broken export.
FP32_MAX_DP = 1e-3
# INT8 keeps layers at output stride <= 8 in fp32 (see _PERCENTILE's comment for why).
FLOAT_STRIDE = 8


def export(model_dir: str | Path | None, formats: Sequence[str] = ("onnx",), *,
           calib_data: str | Path | list | None = None, calib_size: int = 1000,
           parity_data: str | Path | list | None = None, parity_size: int = 500,
           opset: int = OPSET, seed: int = 0, float_stride: int = FLOAT_STRIDE,
           record: bool = True, device: str | None = None) -> dict[str, Any]:
    """Export `model_dir` to each of `formats` ('onnx', 'int8', 'torchscript') inside the folder.

    calib_data: faces to calibrate INT8 activation ranges on (any source read_source accepts;
        default: the training source recorded in config.json). Its 'train' split is used when
        it has splits. `calib_size` faces are drawn, stratified and seeded.
    parity_data: held-out faces to compare each export with torch on (default: the validation
        source recorded in config.json, else calibration-source faces not used for
        calibration). Without any, fp32 formats are checked on random inputs only.
    float_stride: INT8 keeps in fp32 the layers whose output stride (input side / feature-map
        side) is at most this, the high-resolution front where quantization errors flip labels;
        0 quantizes every layer.
    record: write the figures into config.json under metrics["export"].
    device: where torch computes the reference logits and runs the TorchScript file for the
        parity check (``cpu``, ``cuda[:N]``). Graphs are always traced from a CPU copy, so the
        files run anywhere, and ONNX files are checked on ONNX Runtime's CPU provider.

    Returns {format: {"file", "bytes", "seconds", "parity": {...}, ...}} as recorded. Raises
    FaceGenderError when a format is unknown, data are missing, or an fp32 export does not match
    torch (the file is then not written).
    """
    torch = require("torch")
    from .device import torch_device

    dev = torch_device(device)  # an unusable device fails here, before any work
    formats = _check_formats(formats)
    folder = modelfile.resolve_model_dir(model_dir)
    net, cfg = modelfile.load_torch_model(folder)
    weights_sha = sha256_file(folder / modelfile.WEIGHTS_NAME)

    calib_samples: list[Sample] = []
    calib_src = None
    if "int8" in formats:
        calib_src = _default_source(calib_data, cfg, "train", "calib_data")
        if calib_src is None:
            raise FaceGenderError(
                "INT8 export needs calibration faces (a few hundred training images): pass "
                "calib_data / --calib-data; the training source recorded in config.json "
                f"({_recorded(cfg, 'train') or 'none'}) was not found")
        calib_samples = pick_samples(calib_src, ("train",), calib_size, seed, exclude=set())
    parity_src = _default_source(parity_data, cfg, "val", "parity_data")
    if parity_src is None and calib_src is not None:
        parity_src = calib_src  # held-out: the calibration faces are excluded below
    parity_samples: list[Sample] = []
    if parity_src is not None:
        parity_samples = pick_samples(parity_src, ("test", "val"), parity_size, seed + 1,
                               exclude={s.ref for s in calib_samples})
    x_par, y_par = face_arrays(parity_samples, cfg)
    if len(x_par) == 0:  # nothing to compare on but random inputs: a numerical check only
        x_par = np.random.default_rng(seed).standard_normal(
            (16, 3, cfg.input_size, cfg.input_size)).astype(np.float32)
    ref = _torch_logits(net, x_par, torch, dev)
    p_ref = softmax(ref, cfg.temperature)[:, cfg.male_index]
    parity_info = {"source": str(parity_src) if parity_src is not None else "random inputs",
                   "faces": len(parity_samples)}

    results: dict[str, Any] = {}
    example = torch.from_numpy(x_par[:2].copy())
    with tempfile.TemporaryDirectory(prefix="facegender-export-", dir=folder) as tmp:
        tmpdir = Path(tmp)
        fp32_path: Path | None = None
        for fmt in formats:
            t0 = time.perf_counter()
            entry: dict[str, Any] = {"file": FILE_NAMES[fmt]}
            staged = tmpdir / FILE_NAMES[fmt]
            if fmt in ("onnx", "int8") and fp32_path is None:
                fp32_path = tmpdir / "fp32.onnx"
                exporter = export_onnx_graph(net, example, fp32_path, opset)
            if fmt == "onnx":
                staged.write_bytes(fp32_path.read_bytes())
                entry.update(exporter=exporter, opset=opset)
                p = _ort_probs(staged, x_par, cfg)
            elif fmt == "int8":
                x_cal, _ = face_arrays(calib_samples, cfg)
                if len(x_cal) < 10:
                    raise FaceGenderError(f"{calib_src}: only {len(x_cal)} usable calibration "
                                          "faces; INT8 calibration needs at least 10")
                kept, nodes = quantize_int8(fp32_path, staged, x_cal, tmpdir,
                                        float_stride=float_stride)
                entry.update(exporter=exporter, opset=opset,
                             quantization=quantization_desc(float_stride, len(kept), nodes),
                             calib={"source": str(calib_src), "faces": len(x_cal)})
                p = _ort_probs(staged, x_par, cfg)
            else:
                _export_torchscript(net, example, staged, torch)
                p = softmax(_torch_logits(_load_torchscript(staged, torch), x_par, torch, dev),
                            cfg.temperature)[:, cfg.male_index]
            entry["parity"] = {**parity_info, **parity_figures(p, p_ref, y_par, cfg.threshold,
                                                                cfg.unsure_band)}
            if fmt != "int8" and entry["parity"]["max_abs_dp"] > FP32_MAX_DP:
                raise FaceGenderError(
                    f"{fmt} export of {folder} does not match torch (max |dp(male)| "
                    f"{entry['parity']['max_abs_dp']:.2g} > {FP32_MAX_DP}); nothing was written")
            # Put in place only once checked, so 'auto' never picks up a half-written file.
            os.replace(staged, folder / FILE_NAMES[fmt])
            entry.update(bytes=(folder / FILE_NAMES[fmt]).stat().st_size,
                         seconds=round(time.perf_counter() - t0, 2),
                         weights_sha256=weights_sha, torch=torch.__version__,
                         torch_device=str(dev),
                         onnxruntime=_ort_version() if fmt != "torchscript" else None)
            results[fmt] = entry
    if record:
        cfg = modelfile.load_config(folder)  # fresh: keep whatever else changed meanwhile
        cfg.metrics.setdefault("export", {}).update(results)
        modelfile.save_config(cfg, folder)
    return results


def format_export_summary(results: dict[str, Any]) -> str:
    """One line per exported format: file, size and parity against torch."""
    lines = []
    for fmt, e in results.items():
        par = e["parity"]
        line = (f"{fmt:<11} {e['file']:<20} {e['bytes'] / 1e6:6.2f} MB  "
                f"max|dp| {par['max_abs_dp']:.2g}  mean|dp| {par['mean_abs_dp']:.2g}")
        if par["faces"]:
            line += f"  label agreement {par['agreement']:.2%} on {par['faces']} faces"
            if par.get("agreement_sure") is not None and par["sure_faces"] < par["faces"]:
                line += (f", {par['agreement_sure']:.2%} on the {par['sure_faces']} outside the "
                         "unsure band")
            if par.get("accuracy") is not None:
                line += f" (accuracy {par['accuracy']:.2%} vs torch {par['torch_accuracy']:.2%})"
        else:
            line += "  (random inputs only: no parity faces found)"
        if e.get("quantization", {}).get("float_layers", "none") != "none":
            line += f"\n{'':12}fp32 layers: {e['quantization']['float_layers']}"
        lines.append(line)
    return "\n".join(lines)


# -- helpers


# Chosen by measurement (benchmarks/quantization.py, default model, all 11,649 celeba val faces):
# 99.99th-percentile ranges beat MinMax and other percentiles. Most label flips come from the
# high-resolution front of the network: quantizing it gives a few faces large errors, so the
# layers whose output stride is <= 8 (>= 10x10 maps at 80 px: stem and first blocks) stay fp32.
# That cut 31 flips to 6 (99.73% -> 99.95% agreement) at the same file size and speed on this
# CPU; those layers hold 0.8% of the weights. 16-bit activations everywhere agree as well
# (99.95%) but run 6x slower than fp32 here.
_PERCENTILE = 99.99
_CALIB_BATCH = 20  # histogram calibrators need equal-sized batches; a ragged tail is dropped


def quantization_desc(float_stride: int, float_nodes: int, nodes: int) -> dict[str, str]:
    """What config.json records about an INT8 export."""
    return {"format": "QDQ", "weights": "int8 per-channel (reduce_range)",
            "activations": "uint8", "calibration": f"Percentile {_PERCENTILE}",
            "float_layers": (f"output stride <= {float_stride}: {float_nodes} of {nodes} nodes "
                             "stay fp32") if float_stride else "none"}


def calibration_faces(source, cfg: ModelConfig, size: int = 1000, seed: int = 0) -> np.ndarray:
    """The preprocessed faces INT8 calibration uses: `size` stratified, seeded training faces."""
    return face_arrays(pick_samples(source, ("train",), size, seed, exclude=set()), cfg)[0]


def calibration_batches(x: np.ndarray) -> list[np.ndarray]:
    """Calibration faces in the equal batches they are fed in (a ragged tail is dropped)."""
    whole = max(_CALIB_BATCH, len(x) - len(x) % _CALIB_BATCH)
    return [x[i:i + _CALIB_BATCH] for i in range(0, whole, _CALIB_BATCH)]


def _check_formats(formats: Iterable[str] | str) -> list[str]:
    if isinstance(formats, str):
        formats = [formats]
    out: list[str] = []
    for f in formats:
        f = f.lower().strip()
        if f not in FORMATS:
            raise FaceGenderError(f"unknown export format '{f}'; choose from {', '.join(FORMATS)}")
        if f not in out:
            out.append(f)
    if not out:
        raise FaceGenderError(f"no export format given; choose from {', '.join(FORMATS)}")
    return out


def _recorded(cfg: ModelConfig, split: str) -> str | None:
    entry = cfg.data.get(split)
    return entry.get("source") if isinstance(entry, dict) else None


def _default_source(given, cfg: ModelConfig, split: str, what: str):
    """The source given, else the one recorded in config.json when it is still on disk."""
    if given is not None:
        if isinstance(given, (str, os.PathLike)) and not str(given).startswith("hf:") \
                and not Path(given).exists():
            raise FaceGenderError(f"{what}: {given} not found")
        return given
    rec = _recorded(cfg, split)
    # Several training sources are recorded as a list (PATH@WEIGHT specs): all must be there.
    recs = [str(r).rsplit("@", 1)[0] if not Path(str(r)).exists() else str(r)
            for r in (rec if isinstance(rec, list) else [rec] if rec else [])]
    if recs and all(r.startswith("hf:") or Path(r).exists() for r in recs):
        return recs if isinstance(rec, list) else recs[0]
    return None


def pick_samples(source: Any, splits: tuple[str, ...], n: int, seed: int,
                 exclude: set[str]) -> list[Sample]:
    """Up to n samples of `source`, stratified by label, from the first of `splits` it has."""
    try:
        data = read_source(source)
    except FaceGenderError:
        data = read_source(source, labelled=False)  # unlabelled faces still calibrate
    samples = [s for s in data.samples if s.ref not in exclude]
    for split in splits:
        chosen = [s for s in samples if s.split == split]
        if chosen:
            samples = chosen
            break
    return stratified_limit(samples, n, seed)


def face_arrays(samples: list[Sample], cfg: ModelConfig) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode and preprocess exactly as the Predictor does; undecodable images are skipped."""
    xs, ys = [], []
    for s in samples:
        try:
            img = decode_bytes(s.read_bytes(), s.ref)
        except (ImageError, OSError):
            continue
        xs.append(to_array(img, cfg))
        ys.append(s.label)
    size = cfg.input_size
    x = np.stack(xs) if xs else np.zeros((0, 3, size, size), np.float32)
    y = np.array([lb == "male" for lb in ys]) if ys and all(lb is not None for lb in ys) else None
    return x, y


def _torch_logits(net, x: np.ndarray, torch, device: Any = "cpu", batch: int = 128
                  ) -> np.ndarray:
    """Logits of `net` run on `device` (the net comes back on the CPU). On CUDA, TF32 is off
    while it runs: the fp32 reference must be fp32 for the parity bound to mean anything."""
    cudnn_tf32, matmul_tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        net.to(device)
        with torch.inference_mode():
            return np.concatenate([net(torch.from_numpy(x[i:i + batch]).to(device)).float().cpu()
                                   .numpy() for i in range(0, len(x), batch)])
    finally:
        net.to("cpu")
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = \
            cudnn_tf32, matmul_tf32


def _ort_probs(path: Path, x: np.ndarray, cfg: ModelConfig, batch: int = 128) -> np.ndarray:
    from .backends import OrtBackend

    run = OrtBackend(path)
    logits = np.concatenate([run(x[i:i + batch]) for i in range(0, len(x), batch)])
    return softmax(logits, cfg.temperature)[:, cfg.male_index]


def parity_figures(p: np.ndarray, p_ref: np.ndarray, y: np.ndarray | None, threshold: float,
                   unsure_band: float = 0.0) -> dict[str, Any]:
    """How closely probabilities `p` follow the reference `p_ref`: label agreement (overall and
    outside the unsure band), |dp| and, with labels `y`, both accuracies."""
    d = np.abs(p.astype(np.float64) - p_ref)
    same = (p >= threshold) == (p_ref >= threshold)
    sure = np.abs(p_ref - 0.5) >= unsure_band  # faces torch labels outright (as Predictor does)
    out: dict[str, Any] = {"max_abs_dp": float(d.max()), "mean_abs_dp": float(d.mean()),
                           "agreement": float(same.mean()),
                           "sure_faces": int(sure.sum()),
                           "agreement_sure": float(same[sure].mean()) if sure.any() else None}
    if y is not None:
        out["accuracy"] = float(np.mean((p >= threshold) == y))
        out["torch_accuracy"] = float(np.mean((p_ref >= threshold) == y))
    return out


def export_onnx_graph(net: Any, example: Any, out: Path, opset: int) -> str:
    """torch -> ONNX with a dynamic batch axis, checked by onnx.checker; returns the exporter."""
    import contextlib
    import io
    import warnings

    torch = require("torch")
    onnx = require("onnx")
    names = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME], "opset_version": opset}
    try:
        # The dynamo exporter narrates each step on stdout; a library should not.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (example,), str(out), dynamo=True, external_data=False,
                              dynamic_shapes=({0: torch.export.Dim("batch")},), **names)
        exporter = "dynamo"
    except Exception as exc:  # torch.export cannot capture some models; the legacy path can
        first = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.onnx.export(net, (example,), str(out), dynamo=False,
                                  dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                                  **names)
        except Exception as exc2:
            raise FaceGenderError(f"ONNX export failed: {first}; legacy exporter: "
                                  f"{type(exc2).__name__}: {exc2}") from None
        exporter = f"torchscript (dynamo failed: {first})"
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    return exporter


def store_weights_fp16(path: str | Path, min_elements: int = 1024) -> int:
    """Rewrite an fp32 ONNX file so each float weight of at least `min_elements` values is
    stored in float16 and cast back to float32 by the graph: the file halves, while ONNX Runtime
    folds the casts when it loads the model, so it computes in float32 at the same speed. For
    models whose weights are float16 already (a fp16 safetensors file), nothing is lost.
    Returns the number of weights converted; the file is replaced through a temporary file."""
    import onnx
    from onnx import helper, numpy_helper

    path = Path(path)
    model = onnx.load(str(path))
    graph, casts, done = model.graph, [], 0
    for init in list(graph.initializer):
        if init.data_type != onnx.TensorProto.FLOAT or int(np.prod(init.dims)) < min_elements:
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16),
                                       f"{init.name}__fp16")
        graph.initializer.remove(init)
        graph.initializer.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT,
                                      name=f"{init.name}__cast"))
        done += 1
    for node in reversed(casts):  # before every consumer: the graph stays topologically sorted
        graph.node.insert(0, node)
    onnx.checker.check_model(model)
    tmp = path.with_name(f".{path.name}.fp16")
    onnx.save(model, str(tmp))
    tmp.replace(path)
    return done


def quantize_int8(fp32: Path, out: Path, x_cal: np.ndarray, tmpdir: Path,
                  options: dict[str, Any] | None = None,
                  float_stride: int = FLOAT_STRIDE) -> tuple[list[str], int]:
    """Static QDQ quantization with the settings above; `options` overrides quantize_static
    arguments (benchmarks/quantization.py compares variants through it). Returns the nodes left
    in fp32 (see float_nodes) and the node count of the pre-processed graph."""
    require("onnxruntime")
    import onnx
    from onnxruntime import quantization as q
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(q.CalibrationDataReader):
        def __init__(self, x: np.ndarray):
            self._batches = iter([{INPUT_NAME: b} for b in calibration_batches(x)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    # Shape inference + graph cleanup first, as onnxruntime recommends for static quantization.
    pre = tmpdir / "pre.onnx"
    quant_pre_process(str(fp32), str(pre))
    graph = onnx.load(str(pre))
    for i, node in enumerate(graph.graph.node):
        # The optimiser's HardSwish -> HardSigmoid * x rewrite leaves nodes without names, which
        # nodes_to_exclude cannot address.
        node.name = node.name or f"{node.op_type}_{i}"
    kept = float_nodes(graph, float_stride)
    kw: dict[str, Any] = dict(
        quant_format=q.QuantFormat.QDQ, per_channel=True, reduce_range=True,
        activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
        calibrate_method=q.CalibrationMethod.Percentile,
        extra_options={"CalibPercentile": _PERCENTILE}, nodes_to_exclude=kept)
    kw.update(options or {})
    q.quantize_static(graph, str(out), Reader(x_cal), **kw)
    return kept, len(graph.graph.node)


def in_float_front(side: int, input_side: int, float_stride: int) -> bool:
    """Whether an op whose feature map is `side` wide stays fp32 in the INT8 export (output
    stride input_side / side at most float_stride). quantaware's simulation uses it too."""
    return bool(float_stride) and side * float_stride >= input_side


def float_nodes(model, float_stride: int) -> list[str]:
    """Names of the nodes whose output feature map is at least 1/float_stride of the input's
    side. A node without a spatial output (pooled squeeze-excite branch, classifier) takes the
    resolution of its first input, so a squeeze-excite block stays with its feature map."""
    if not float_stride:
        return []
    g = model.graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(g.input) + list(g.value_info) + list(g.output)}
    side = shapes[g.input[0].name][2]
    if not side:  # spatial size not fixed in the graph: no resolution to cut at
        return []
    res: dict[str, int] = {g.input[0].name: side}
    kept = []
    for node in g.node:
        dims = shapes.get(node.output[0], [])
        r = dims[2] if len(dims) == 4 and dims[2] > 1 else res.get(node.input[0], 0)
        for o in node.output:
            res[o] = r
        if r and in_float_front(r, side, float_stride):
            kept.append(node.name)
    return kept


def _export_torchscript(net, example, out: Path, torch) -> None:
    """torch.jit.trace -> model.torchscript.pt.

    The archive is a zip read by TorchScript's own loader, not by Python's pickle; but it carries
    TorchScript code that torch.jit.load compiles and runs, so load only files you trust. torch
    2.14 marks torch.jit.save/load deprecated (FutureWarning) in favour of torch.export; the
    format still loads from C++ (libtorch) and Python, which is what it is offered for.
    """
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        # Trace warnings concern Python values frozen into the graph: conv nets have none; the
        # FutureWarning is the deprecation noted above.
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, example, check_trace=True)
        torch.jit.save(traced, str(out))


def _load_torchscript(path: Path, torch):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated in 2.14
        return torch.jit.load(str(path), map_location="cpu")


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__
