"""Shared fixtures: paths to the real data, and one small model trained on real faces per session.

Set FACEGENDER_TEST_MODEL=/path/to/model-folder to reuse an already trained folder while
developing (CI always trains its own)."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT / ".." / "shared" / "data").resolve()
CELEBA = DATA / "celeba-gender"
FAIRFACE = DATA / "fairface540"

# The recipe of the session model: small and quick, yet trained on 4,000 real faces.
TINY_RECIPE = dict(arch="mobilenetv3_small", input_size=64, epochs=2, batch_size=32, lr=3e-3,
                   augment="light", limit=4000, val_limit=1000, seed=0, progress=False)


def need_data() -> None:
    if not (CELEBA / "train.tar").is_file():
        pytest.skip(f"real data not found at {DATA}")


@pytest.fixture(scope="session")
def celeba() -> Path:
    need_data()
    return CELEBA


@pytest.fixture(scope="session")
def fairface() -> Path:
    need_data()
    return FAIRFACE


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory) -> Path:
    """A model folder trained here on 4,000 celeba faces for 2 epochs (about a minute)."""
    reuse = os.environ.get("FACEGENDER_TEST_MODEL")
    if reuse and not os.environ.get("CI"):
        return Path(reuse)
    need_data()
    from facegender import train

    out = tmp_path_factory.mktemp("models") / "tiny"
    train(CELEBA / "train.tar", out, val=CELEBA / "val.tar", **TINY_RECIPE)
    return out


def extract_members(tar_path: Path, names: list[str], dest: Path) -> list[Path]:
    """Copy a few named members of a tar into dest (tests work on small real subsets)."""
    out = []
    with tarfile.open(tar_path) as tf:
        for name in names:
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tf.extractfile(name).read())
            out.append(target)
    return out


def first_members(tar_path: Path, per_folder: int, folders: tuple[str, ...]) -> list[str]:
    """The first `per_folder` image names under each folder prefix, in archive order."""
    picked: dict[str, list[str]] = {f: [] for f in folders}
    with tarfile.open(tar_path) as tf:
        for m in tf:
            for f in folders:
                if m.isfile() and m.name.startswith(f) and len(picked[f]) < per_folder:
                    picked[f].append(m.name)
            if all(len(v) >= per_folder for v in picked.values()):
                break
    return [n for f in folders for n in picked[f]]


@pytest.fixture(scope="session")
def validator():
    """A validator of docs/face-record.schema.json, the one record type for a face."""
    jsonschema = pytest.importorskip("jsonschema")
    import json

    return jsonschema.Draft202012Validator(
        json.loads((ROOT / "docs" / "face-record.schema.json").read_text()))


@pytest.fixture(scope="module")
def ray_address():
    """A local 2-CPU Ray session for one test module: its address, for --ray-address."""
    ray = pytest.importorskip("ray")
    import logging

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=300 * 2**20,
             logging_level=logging.WARNING)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
