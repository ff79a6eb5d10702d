"""Give a trained dlib_resnet model dlib's CC0 gender classifier as a second opinion.

    python tools/add_cydral_expert.py MODEL OUT DATA... [--drop disputed=1] [--limit 1500]

Writes OUT, a `dlib_resnet_cydral` model folder (facegender/models/cydral_gender.py): MODEL's
network plus `weight` x the classifier's logits. The weight is fitted, with the temperature, by
a logistic regression of the labels on the two networks' logit margins over the validation
faces of DATA (each source's val split, never a test split; at most --limit faces a source;
the face, its mirror image and a degraded copy of each, sources weighted alike: the views
`facegender calibrate` uses). Temperature and unsure band are then re-fitted on the same views
for the combined logits, as `facegender calibrate` fits them (`refit_calibration`). Package it
with `python tools/make_shipped_model.py OUT --name accurate --half`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from facegender.errors import FaceGenderError, ImageError
from facegender.models import modelfile
from facegender.models.cydral_gender import PROVENANCE, WithCydral, load_expert
from facegender.training.calibrate import ViewMaker, refit_calibration
from facegender.training.multisource import as_specs, dropped, gather, parse_drop
from facegender.training.sampling import balanced_weights


def margins(net: WithCydral, val: list, cfg: modelfile.ModelConfig, views: int, seed: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """Per view of each face: the base network's and the expert's male-minus-female logit."""
    make_views = ViewMaker(cfg, views, seed, None)
    base, expert, ys, kept = [], [], [], []
    male = cfg.male_index
    for i, s in enumerate(val):
        try:
            x = make_views(s)
        except (ImageError, OSError):
            continue
        if x is None:
            continue
        t = torch.from_numpy(x)
        with torch.inference_mode():
            zb = net.base(t).numpy()
            ze = net.expert(net.chip(t)).numpy()
        base.append(zb[:, male] - zb[:, 1 - male])
        expert.append(ze[:, 1] - ze[:, 0])  # the expert's labels are (female, male)
        ys.append(int(s.label == "male"))
        kept.append(s)
        if (i + 1) % 500 == 0:
            print(f"  {i + 1}/{len(val)} faces", file=sys.stderr, flush=True)
    return np.stack(base), np.stack(expert), np.array(ys), kept


def fit_weight(base: np.ndarray, expert: np.ndarray, y: np.ndarray, w: np.ndarray
               ) -> tuple[float, float, float]:
    """p(male) = sigmoid(a * base + b * expert), no intercept (neither side is favoured),
    sample-weighted; returns (b / a, a, b)."""
    from sklearn.linear_model import LogisticRegression

    views = base.shape[1]
    X = np.stack([base.reshape(-1), expert.reshape(-1)], 1)
    lr = LogisticRegression(fit_intercept=False, C=1e4, max_iter=1000)
    lr.fit(X, np.repeat(y, views), sample_weight=np.repeat(w, views))
    a, b = (float(v) for v in lr.coef_[0])
    if a <= 0:
        raise FaceGenderError(f"the model's own logits got a weight of {a:.3f}: not a usable fit")
    return max(0.0, b / a), a, b


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a trained dlib_resnet model folder")
    ap.add_argument("out", type=Path)
    ap.add_argument("data", nargs="+", help="the training sources (their val splits are used)")
    ap.add_argument("--drop", action="append", default=[], help="e.g. disputed=1")
    ap.add_argument("--limit", type=int, default=1500, help="val faces a source (default 1500)")
    ap.add_argument("--views", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    torch.set_num_threads(2)

    net, cfg = modelfile.load_torch_model(a.model)
    if cfg.arch != "dlib_resnet" or cfg.labels != ["female", "male"]:
        raise FaceGenderError(f"{a.model}: needs a dlib_resnet model with labels female, male "
                              f"(got {cfg.arch}, {cfg.labels})")
    if a.out.exists():
        raise FaceGenderError(f"{a.out} exists; choose another OUT")
    net = WithCydral(net, load_expert(), weight=0.0, size=cfg.input_size).eval()
    rules = parse_drop(a.drop)
    split = gather(as_specs(a.data), drop=rules, val_fraction=0.1, val_per_source=a.limit,
                   limit=None, seed=a.seed)
    val = [s for s in split.val if not dropped(s, rules)]
    print(f"fitting the expert's weight on {len(val)} val faces x {a.views} views",
          file=sys.stderr)
    base, expert, y, kept = margins(net, val, cfg, a.views, a.seed)
    sw = balanced_weights(kept, ["source"], 1.0)
    weight, coef_base, coef_expert = fit_weight(base, expert, y, sw)
    acc = {name: float((((m[:, 0] >= 0).astype(int)) == y).mean())
           for name, m in (("model", base), ("expert", expert),
                           ("combined", base + weight * expert))}
    print(f"weight {weight:.3f} (a {coef_base:.3f}, b {coef_expert:.3f}); val accuracy of the "
          f"clean crops: {json.dumps({k: round(v, 4) for k, v in acc.items()})}", file=sys.stderr)

    net.weight.fill_(weight)
    a.out.mkdir(parents=True)
    for f in ("history.csv", "curves.png"):
        if (Path(a.model) / f).exists():
            shutil.copy2(Path(a.model) / f, a.out / f)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()},
              str(a.out / modelfile.WEIGHTS_NAME))
    cfg.arch = "dlib_resnet_cydral"
    cfg.recipe = {**(cfg.recipe or {}), "expert": {
        "network": "dlib gender classifier v1 (models/cydral_gender.py)", **PROVENANCE,
        "weight": round(weight, 4), "fitted_on": f"{len(kept)} val faces x {a.views} views, "
        f"sources weighted alike: {', '.join(sorted({s.groups.get('source', '') for s in kept}))}",
        "val_accuracy_clean": {k: round(v, 4) for k, v in acc.items()},
        "made_by": "python tools/add_cydral_expert.py " + " ".join(argv or sys.argv[1:])}}
    cfg.metrics = {k: v for k, v in (cfg.metrics or {}).items() if k != "export"}
    # Logits (female, male) = (0, margin): softmax over them is sigmoid(margin / T).
    combined = base + weight * expert
    z = np.stack([np.zeros_like(combined), combined], -1)
    before, after = refit_calibration(cfg, z, y, sw, 1, a.seed)
    cfg.recipe["calibration"] = (
        f"temperature and unsure band on {a.views} views of each validation face (face, mirror, "
        f"degraded), sources weighted alike, for the combined logits; {len(kept)} faces")
    modelfile.save_config(cfg, a.out)
    print(json.dumps({"before": before, "after": after}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
