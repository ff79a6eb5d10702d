"""Inference engines behind the Predictor: each maps a float32 NCHW batch to logits.

onnxruntime runs the exported model.onnx / model.int8.onnx without torch; the torch backend
loads model.safetensors and needs the [train] extra.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import FaceGenderError, require
from ..models import modelfile
from .device import check_session, onnx_providers, parse_device, torch_device

BACKENDS = ("auto", "onnx", "int8", "torch")


class TorchBackend:
    name = "torch"

    def __init__(self, model_dir: Path, threads: int | None = None, device: str | None = None):
        torch = require("torch")
        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.device = torch_device(device)
        self.model, _ = modelfile.load_torch_model(model_dir)
        self.model.to(self.device)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            x_t = self._torch.from_numpy(x).to(self.device)
            return self.model(x_t).float().cpu().numpy()


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def ort_options(ort, threads: int):
    """Session options for `threads` intra-op threads that sleep when idle. ONNX Runtime's
    threads spin-wait for work by default; next to a decode + detect pool on the same cores
    that spinning cost 0.3-0.6 ms of CPU per photo and no wall time (benchmarks/throughput.py)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(threads))
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return opts


class OrtBackend:
    """threads: intra-op threads (default: every usable core, sleeping when idle)."""

    def __init__(self, onnx_path: Path, threads: int | None = None, name: str = "onnx",
                 device: str | None = None, cfg: modelfile.ModelConfig | None = None):
        ort = require("onnxruntime", "onnx")
        opts = ort_options(ort, threads or usable_cores())
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.name = name
        try:
            self.session = ort.InferenceSession(str(onnx_path), opts,
                                                providers=onnx_providers(device))
        except Exception as exc:  # ONNX Runtime raises its own types for unreadable models
            raise FaceGenderError(f"{onnx_path}: not a loadable ONNX model "
                                  f"({str(exc).splitlines()[0][:200]})") from None
        check_session(self.session, device)
        if cfg is not None:
            check_onnx_contract(self.session, onnx_path, cfg)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


def check_onnx_contract(session, onnx_path: Path, cfg: modelfile.ModelConfig) -> None:
    """The config values the graph fixes: one input of 3 x input_size x input_size (where the
    graph names a size) and one logit per label. A mismatch is one line naming config.json and
    the key, before any image is read, instead of ONNX Runtime's shape error mid-batch."""
    config = onnx_path.parent / modelfile.CONFIG_NAME
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = list(inputs[0].shape) if len(inputs) == 1 else []
    if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
        raise FaceGenderError(f"{onnx_path}: takes {[i.shape for i in inputs]}, not one "
                              "N x 3 x H x W image batch; not a facegender classifier")
    sides = [d for d in shape[2:] if isinstance(d, int)]
    if any(d != cfg.input_size for d in sides):
        raise FaceGenderError(
            f"{config}: key 'input_size' is {cfg.input_size} but {onnx_path.name} takes "
            f"{shape[2]}x{shape[3]} inputs (config.json edited, or from other weights)")
    out = outputs[0].shape if outputs else []
    if out and isinstance(out[-1], int) and out[-1] != len(cfg.labels):
        raise FaceGenderError(
            f"{config}: key 'labels' lists {len(cfg.labels)} classes but {onnx_path.name} "
            f"gives {out[-1]} outputs")


def _onnx_is_stale(model_dir: Path, cfg: modelfile.ModelConfig) -> bool:
    """True when config.json records the weights model.onnx came from and they have changed.
    `cfg` is the folder's config as verify_files checked it: its integrity record already holds
    the weights' verified sha256, so they are hashed here only for folders without one."""
    weights = model_dir / modelfile.WEIGHTS_NAME
    recorded = cfg.metrics.get("export", {}).get("onnx", {}).get("weights_sha256")
    if not recorded or not weights.is_file():
        return False
    current = (cfg.integrity or {}).get("files", {}).get(modelfile.WEIGHTS_NAME) \
        or modelfile.file_sha256(weights)
    return current != recorded


def _ort_has_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def _has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def make_backend(model_dir: Path, backend: str = "auto", threads: int | None = None,
                 device: str | None = None, strict: bool = False):
    """'auto' prefers ONNX Runtime fp32 (fastest measured on CPU), then torch. The folder is
    verified first (modelfile.verify_files): a hand-edited label order or input size, a
    replaced weight file or one that is not a regular file is refused; so is a folder without
    an integrity record when `strict`. `device` (cpu, cuda, cuda:N) is checked before any
    model is loaded."""
    parse_device(device)
    if backend not in BACKENDS:
        raise FaceGenderError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    cfg = modelfile.verify_files(model_dir, strict=strict)
    onnx = model_dir / modelfile.ONNX_NAME
    int8 = model_dir / modelfile.ONNX_INT8_NAME
    if backend == "auto" and onnx.is_file() and _onnx_is_stale(model_dir, cfg) and _has_torch():
        warnings.warn(f"{onnx} was exported from other weights than {modelfile.WEIGHTS_NAME} "
                      "(retrained or resumed since?); using torch. Re-run 'facegender export'.",
                      stacklevel=2)
        return TorchBackend(model_dir, threads, device)
    if backend == "auto" and parse_device(device)[0] == "cuda" and _has_torch() \
            and not _ort_has_cuda():
        return TorchBackend(model_dir, threads, device)  # the GPU torch can reach, or its error
    if backend == "onnx" or (backend == "auto" and onnx.is_file()):
        if not onnx.is_file():
            raise FaceGenderError(f"{model_dir}: no {modelfile.ONNX_NAME}; run "
                                  f"'facegender export {model_dir} --format onnx'")
        return OrtBackend(onnx, threads, "onnx", device, cfg)
    if backend == "int8":
        if not int8.is_file():
            raise FaceGenderError(f"{model_dir}: no {modelfile.ONNX_INT8_NAME}; run "
                                  f"'facegender export {model_dir} --format int8'")
        return OrtBackend(int8, threads, "int8", device, cfg)
    if backend == "auto" and not _has_torch():
        raise FaceGenderError(f"{model_dir}: has no {modelfile.ONNX_NAME} and torch is not "
                              "installed; export the model to ONNX or pip install "
                              "\"facegender[train]\"")
    return TorchBackend(model_dir, threads, device)
