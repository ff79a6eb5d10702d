"""Resumable training state without pickle: tensors in safetensors, everything else in JSON."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FaceGenderError, require

torch = require("torch")


def _flatten_optimizer(state: dict) -> tuple[dict[str, Any], dict[str, Any]]:
    tensors, scalars = {}, {}
    for pid, st in state["state"].items():
        for k, v in st.items():
            key = f"{pid}.{k}"
            if torch.is_tensor(v):
                tensors[key] = v.detach().contiguous().cpu()
            else:
                scalars[key] = v
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(folder: Path, model, optimizer, scheduler, trainer_state: dict) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
              str(tmp / "model.safetensors"))
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    state = dict(trainer_state)
    state["optimizer"] = opt_meta
    state["scheduler"] = scheduler.state_dict() if scheduler is not None else None
    state["rng"] = {
        "python": _py_state(random.getstate()),
        "numpy": _np_state(np.random.get_state()),
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # Dropout and random augmentation on the GPU draw from its own generators.
        state["rng"]["cuda"] = [g.tolist() for g in torch.cuda.get_rng_state_all()]
    (tmp / "state.json").write_text(json.dumps(state))
    # Swap in whole, so an interrupt mid-write never leaves a half checkpoint behind.
    for f in tmp.iterdir():
        f.replace(folder / f.name)
    tmp.rmdir()


def load_checkpoint(folder: Path, model, optimizer, scheduler) -> dict:
    from safetensors.torch import load_file

    if not (folder / "state.json").is_file():
        raise FaceGenderError(f"nothing to resume: no checkpoint in {folder}")
    state = json.loads((folder / "state.json").read_text())
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    optimizer.load_state_dict(_unflatten_optimizer(
        load_file(str(folder / "optimizer.safetensors")), state.pop("optimizer")))
    sched = state.pop("scheduler")
    if scheduler is not None and sched is not None:
        scheduler.load_state_dict(sched)
    rng = state.pop("rng")
    random.setstate(_py_unstate(rng["python"]))
    np.random.set_state(_np_unstate(rng["numpy"]))
    torch.set_rng_state(torch.tensor(rng["torch"], dtype=torch.uint8))
    cuda = rng.get("cuda")
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all([torch.tensor(g, dtype=torch.uint8) for g in cuda])
    return state


def _py_state(s):
    return [s[0], list(s[1]), s[2]]


def _py_unstate(s):
    return (s[0], tuple(s[1]), s[2])


def _np_state(s):
    return [s[0], s[1].tolist(), s[2], s[3], s[4]]


def _np_unstate(s):
    return (s[0], np.array(s[1], dtype=np.uint32), s[2], s[3], s[4])
