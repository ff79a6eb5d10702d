"""Frozen-backbone features, computed once and cached: the classic recipe for a converted face
network (VGG-Face style), where the head is all that trains.

Every face goes through the same steps as at prediction time (decode, BlazeFace, the model's
crop policy, ``to_array``), then the backbone's pooled features are stored per view (0 = the
face, 1 = its mirror image, 2.. = degraded copies: JPEG, downscaling, grayscale). The cache is a
folder of ``part-NNNNN.npz`` chunks, so an interrupted extraction resumes where it stopped, and
its key covers the sample list, the crop policy, the backbone weights and the views, so a
changed input never reuses stale features.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FaceGenderError, ImageError, require
from ..io.images import decode_bytes
from ..io.progress import progress_bar
from ..io.sources import Sample
from ..models.modelfile import ModelConfig
from .calibrate import TRAIN_PAD, face_views
from .torchdata import PolicyCrop

torch = require("torch")

CHUNK = 1024  # faces per cache part


class _FaceViews(torch.utils.data.Dataset):
    """Sample -> (views x CHW) of its aligned face, or the reason it has none."""

    def __init__(self, samples: list[Sample], cfg: ModelConfig, views: int, seed: int,
                 pad: float, framing: dict | None = None) -> None:
        self.samples, self.cfg, self.views, self.seed = samples, cfg, views, seed
        self.crop = PolicyCrop(cfg.crop, pad, framing)  # one detector per worker, built lazily

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        s = self.samples[i]
        try:
            img = decode_bytes(s.read_bytes(), s.ref)
        except ImageError as exc:
            return i, None, exc.reason
        except OSError as exc:
            return i, None, f"cannot read ({exc})"
        x = face_views(img, self.crop.find, self.cfg, self.views, self.seed, s.ref)
        return (i, None, "no face found") if x is None else (i, x, "detected")


def _collate(batch):
    return batch


@dataclass
class FeatureSet:
    features: np.ndarray  # (n, views, *shape) float16; rows of failed samples are zero
    ok: np.ndarray  # (n,) bool
    reasons: dict[int, str]  # sample index -> why it has no features


def store_key(cfg: ModelConfig, weights_id: str, seed: int, pad: float, what: str,
              framing: dict | None = None) -> str:
    """Everything that changes a face's features, so a changed input never reuses stale ones."""
    key = [cfg.crop, cfg.input_size, cfg.mean, cfg.std, weights_id, seed, pad, what]
    blob = json.dumps(key + ([framing] if framing is not None else []), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _load_store(root: Path) -> dict[str, tuple[np.ndarray | None, str]]:
    """ref -> (views x dim features, or None, and the reason)."""
    known: dict[str, tuple[np.ndarray | None, str]] = {}
    for part in sorted(root.glob("part-*.npz")):
        with np.load(part) as z:
            refs = json.loads(str(z["refs"]))
            reasons = json.loads(str(z["reasons"]))
            feats, ok = z["features"], z["ok"]
        for i, ref in enumerate(refs):
            known[ref] = (feats[i] if ok[i] else None, reasons.get(str(i), ""))
    return known


def extract_features(samples: list[Sample], encode, cfg: ModelConfig, cache_dir: str | Path, *,
                     weights_id: str, encoder: str, views: int = 2, batch_size: int = 64,
                     workers: int = 1, seed: int = 0, pad: float = TRAIN_PAD,
                     progress: bool = True, what: str = "faces",
                     framing: dict | None = None, compute: bool = True) -> FeatureSet:
    """``encode(x)`` of every sample (e.g. the frozen trunk of a backbone, named by `encoder`
    in the store key), read from the store or computed and added to it. The store holds faces
    by ref, so any list of them (a new split, a subset) reuses what was computed; a face stored
    with fewer views than asked is computed again. `framing` cuts faces by prediction's rule
    (torchdata.PolicyCrop) instead of detecting on the image padded by `pad`. compute=False
    reads only what the store holds (e.g. while another process fills it): the rest come back
    without features."""
    if views < 1:
        raise FaceGenderError(f"views must be >= 1, got {views}")
    root = Path(cache_dir) / store_key(cfg, weights_id, seed, pad, encoder, framing)
    root.mkdir(parents=True, exist_ok=True)
    known = _load_store(root)
    todo = [s for s in dict.fromkeys(s.ref for s in samples)
            if s not in known or (known[s][0] is not None and len(known[s][0]) < views)]
    if not compute:
        known.update({r: (None, "not in the store") for r in todo})
        todo = []
    by_ref = {s.ref: s for s in samples}
    t0 = time.perf_counter()
    bar = progress_bar(len(todo), progress, f"features: {what}", unit="face")
    n_parts = len(list(root.glob("part-*.npz")))
    for lo in range(0, len(todo), CHUNK):
        chunk = [by_ref[r] for r in todo[lo:lo + CHUNK]]
        ds = _FaceViews(chunk, cfg, views, seed, pad, framing)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers,
                                             collate_fn=_collate)
        feats, ok, why = None, np.zeros(len(chunk), bool), {}
        with torch.inference_mode():
            for batch in loader:
                good = [(i, x) for i, x, _ in batch if x is not None]
                why.update({str(i): reason for i, x, reason in batch if x is None})
                if good:
                    x = torch.from_numpy(np.concatenate([g[1] for g in good]))
                    f = encode(x).float().cpu().numpy()
                    f = f.reshape(len(good), views, *f.shape[1:])
                    if feats is None:
                        feats = np.zeros((len(chunk), views, *f.shape[2:]), np.float16)
                    for (i, _), row in zip(good, f, strict=True):
                        feats[i], ok[i] = row, True
                bar.update(len(batch))
        if feats is None:  # no face in the whole chunk
            feats = np.zeros((len(chunk), views, 1), np.float16)
        path = root / f"part-{n_parts:05d}.npz"
        n_parts += 1
        tmp = root / f".tmp-{path.name}"
        with open(tmp, "wb") as fh:
            np.savez(fh, features=feats, ok=ok, reasons=json.dumps(why),
                     refs=json.dumps([s.ref for s in chunk]))
        tmp.replace(path)  # a part is there whole or not at all: an interrupted run resumes
        for i, s in enumerate(chunk):
            known[s.ref] = (feats[i] if ok[i] else None, why.get(str(i), ""))
    bar.close()
    if todo:
        rate = len(todo) / (time.perf_counter() - t0)
        print(f"features: {what}: {len(todo)} faces at {rate:.0f}/s -> {root}", file=sys.stderr)
    shapes = {f.shape[1:] for f, _ in known.values() if f is not None}
    if len(shapes) > 1:
        raise FaceGenderError(f"{root}: feature store mixes shapes {sorted(shapes)}")
    shape = shapes.pop() if shapes else (1,)
    out = np.zeros((len(samples), views, *shape), np.float16)
    ok = np.zeros(len(samples), bool)
    reasons: dict[int, str] = {}
    for i, s in enumerate(samples):
        f, reason = known[s.ref]
        if f is None:
            reasons[i] = reason or "no features"
        else:
            out[i], ok[i] = f[:views], True
    return FeatureSet(out, ok, reasons)
