"""`--device cpu|cuda[:N]`: where torch runs (train, explain, predict --backend torch) and which
ONNX Runtime execution provider prediction uses (CUDA needs the onnxruntime-gpu package).

Asking for CUDA where there is none is an error that says what is missing, never a silent fall
back to the CPU: a user who asked for the GPU wants to know it is not being used.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import FaceGenderError

_SPEC = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


class DeviceError(FaceGenderError):
    """The requested device does not exist here."""


def parse_device(spec: str | None) -> tuple[str, int]:
    """'cpu', 'cuda', 'cuda:1' -> ('cpu', 0), ('cuda', 0), ('cuda', 1)."""
    m = _SPEC.match((spec or "cpu").strip().lower())
    if not m or (m.group(1) == "cpu" and m.group(2)):
        raise DeviceError(f"device must be cpu, cuda or cuda:N, got {spec!r}")
    return m.group(1), int(m.group(2) or 0)


def torch_device(spec: str | None) -> Any:
    """A torch.device after checking that torch can use it."""
    import torch

    kind, index = parse_device(spec)
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = ("this torch is a CPU-only build" if torch.version.cuda is None else
               f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no GPU: no NVIDIA "
               "driver or device on this machine")
        raise DeviceError(f"--device {spec}: CUDA is not available ({why}); use --device cpu")
    n = torch.cuda.device_count()
    if index >= n:
        raise DeviceError(f"--device {spec}: this machine has {n} CUDA device(s), "
                          f"cuda:0 to cuda:{n - 1}")
    return torch.device("cuda", index)


def onnx_providers(spec: str | None) -> list[Any]:
    """ONNX Runtime providers for a device; CUDA only where onnxruntime-gpu provides it."""
    kind, index = parse_device(spec)
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise DeviceError(f"--device {spec}: this onnxruntime ({ort.__version__}) has no CUDA "
                          "provider; pip install onnxruntime-gpu, or use --backend torch "
                          "with a CUDA torch, or --device cpu")
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


def check_session(session: Any, spec: str | None) -> None:
    """ONNX Runtime drops a provider it cannot start (no driver) with only a log line: refuse."""
    if parse_device(spec)[0] == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        raise DeviceError(f"--device {spec}: ONNX Runtime could not start its CUDA provider "
                          "(is the NVIDIA driver / CUDA runtime installed?); use --device cpu")
