"""--device: cpu everywhere, and a clear one-line error (exit 2, nothing done) where CUDA is asked
for on a machine without it, for every verb that takes it."""

from __future__ import annotations

import pytest

from facegender.cli import main
from facegender.infer.device import DeviceError, onnx_providers, parse_device

GROUP = "examples/group.jpg"


def test_parse_device():
    assert parse_device("cpu") == ("cpu", 0) and parse_device(None) == ("cpu", 0)
    assert parse_device("cuda") == ("cuda", 0) and parse_device("CUDA:3") == ("cuda", 3)
    for bad in ("gpu", "cpu:1", "cuda:-1", "cuda:", "cuda:1:2", ""):
        with pytest.raises(DeviceError, match="cpu, cuda or cuda:N"):
            parse_device(bad) if bad else parse_device(" ")


def test_cpu_device_predicts_as_default():
    from facegender import load

    a = load("fast").predict(GROUP)[0].records()
    b = load("fast", device="cpu").predict(GROUP)[0].records()
    assert a == b


def _no_cuda():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")


def test_onnx_cuda_without_the_gpu_package():
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed")
    with pytest.raises(DeviceError, match="onnxruntime-gpu"):
        onnx_providers("cuda")


@pytest.mark.parametrize("argv", [
    ["predict", GROUP, "--device", "cuda"],
    ["predict", GROUP, "--device", "cuda:1", "--backend", "torch"],
    ["evaluate", "examples", "--device", "cuda"],
    ["explain", GROUP, "--out", "{tmp}/cams", "--device", "cuda"],
    ["train", "examples", "--out", "{tmp}/model", "--device", "cuda"],
    ["train", "examples", "--recipe", "tail", "--out", "{tmp}/model", "--device", "cuda"],
    ["export", "{tmp}/copy", "--device", "cuda"],
    ["serve", "fast", "--device", "cuda", "--port", "1"],
])
def test_cuda_absent_is_one_clear_line(argv, tmp_path, capsys):
    _no_cuda()
    if "export" in argv:  # a model folder of its own, which must come out untouched
        import shutil

        from facegender.models.modelfile import resolve_model_dir

        shutil.copytree(resolve_model_dir("fast"), tmp_path / "copy")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    code = main([x.replace("{tmp}", str(tmp_path)) for x in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "CUDA is not available" in err and "--device cpu" in err and "Traceback" not in err
    # refused before any work or output
    assert sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before


def test_api_says_so_too():
    _no_cuda()
    from facegender import load

    with pytest.raises(DeviceError, match="CUDA is not available"):
        load("fast", backend="torch", device="cuda")
