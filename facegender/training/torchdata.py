"""Samples -> torch batches. Decoding goes through images.py and preprocessing through
preprocess.py, the same code the predictor uses; only augmentation is training-specific."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import ImageError, require
from ..infer.preprocess import to_array
from ..io.images import decode_bytes
from ..io.sources import Sample
from ..models.modelfile import ModelConfig

torch = require("torch")


class FaceDataset(torch.utils.data.Dataset):
    """Returns (CHW float32 tensor, class index, sample index) or (None, reason, index) when an
    image cannot be used, so a broken file is reported, not fatal."""

    def __init__(self, samples: list[Sample], cfg: ModelConfig,
                 augment: Callable | None = None, crop: Callable | None = None):
        self.samples = samples
        self.cfg = cfg
        self.augment = augment
        self.crop = crop  # optional face-crop step (the model's crop policy)
        self.class_index = {name: i for i, name in enumerate(cfg.labels)}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        s = self.samples[i]
        try:
            img = decode_bytes(s.read_bytes(), s.ref)
            if self.crop is not None:
                img = self.crop(img, s.ref)
            if self.augment is not None:
                img = self.augment(img)
            x = torch.from_numpy(to_array(img, self.cfg))
        except ImageError as exc:
            return None, exc.reason, i
        except OSError as exc:
            return None, f"cannot read ({exc})", i
        return x, self.class_index[s.label] if s.label else -1, i


def collate(batch):
    """Stack good items; pass failures through as (index, reason) pairs for the caller to log."""
    good = [b for b in batch if b[0] is not None]
    failed = [(b[2], b[1]) for b in batch if b[0] is None]
    if good:
        x = torch.stack([b[0] for b in good])
        y = torch.tensor([b[1] for b in good], dtype=torch.long)
        idx = torch.tensor([b[2] for b in good], dtype=torch.long)
    else:
        x = y = idx = None
    return x, y, idx, failed


def _seed_worker(worker_id: int) -> None:
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def default_workers() -> int:
    """Data-loading processes when none are asked for: leave one core to the model."""
    import os

    return min(4, max(0, (os.cpu_count() or 1) - 1))


class PolicyCrop:
    """Training faces cut as prediction cuts them: BlazeFace on the image padded by half its side
    (tight crops need the room), the model's crop policy around the largest face, the whole
    image where no face is found. With `framing` (a model's measured training framing), exactly
    prediction's rule instead (faces/framing.py find_faces: the image itself, then padded and
    whole for crop-shaped inputs), which cuts the same pixels prediction feeds the model.
    Picklable; each worker process builds its own detector."""

    def __init__(self, policy: dict, pad: float = 0.5, framing: dict | None = None) -> None:
        self.policy, self.pad, self.framing = policy, pad, framing
        self._detector = None

    def __getstate__(self) -> dict:
        return {"policy": self.policy, "pad": self.pad, "framing": self.framing,
                "_detector": None}

    def find(self, img):
        """The policy's crop of the largest face, or None when no face is found."""
        from ..faces import CropPolicy, FaceDetector, detect_and_crop
        from ..faces.framing import find_faces

        if self._detector is None:
            policy = CropPolicy.from_dict(self.policy)
            self._detector = (FaceDetector(threads=1) if policy.detect else None, policy)
        detector, policy = self._detector
        if self.framing is not None:
            found = find_faces(img, detector, policy, self.framing, largest=True)
            return found[0][1] if found else None
        found = detect_and_crop(img, detector, policy, largest=True, pad=self.pad)
        return found[0][1] if found else None

    def __call__(self, img, ref: str):
        face = self.find(img)
        return img if face is None else face


def make_loader(dataset: FaceDataset, batch_size: int, shuffle: bool, workers: int,
                seed: int | None = None, sampler=None):
    gen = None
    if seed is not None:
        gen = torch.Generator()
        gen.manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
        num_workers=workers,
        collate_fn=collate, generator=gen, worker_init_fn=_seed_worker if workers else None,
        persistent_workers=False, pin_memory=False, drop_last=False,
    )
