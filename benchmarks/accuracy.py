"""The held-out accuracy table (facegender.report.heldout) for several models side by side
(default: the previous default model, fast and accurate).

    python benchmarks/accuracy.py [MODEL ...] [--previous REV] [--celeba-limit N] [--[no-]tta]
        [--no-robustness] [--json OUT]

MODEL: a model folder or a shipped name (fast, accurate). --previous REV adds the default model
as it was at git revision REV (read from git history into a temporary folder; default: the
commit before the two-model layout, 82f7c96); --previous none leaves it out.

Sets (../shared/data): fairface540 (540 loose crops, detector + the model's crop policy; by age,
by race and by race x gender), AAF test (3,185, the dataset's own split, never trained or
calibrated on), kinfacew test (558, by parent / child) and fiw test (590), both identity-disjoint
from their train splits, celeba val (11,649
tight crops; a model whose crop policy aligns on landmarks detects them, the others read the
crops as they are), with the undisputed labels (attributes.csv `disputed` = 0) for accuracy and
the worst gender x Young x Wearing_Lipstick group (groups under 30 faces not counted).
Robustness: fairface540 re-saved as JPEG q75, as WebP (q80), and halved in size; the share of
faces given the same label as the original. Each model runs as its config says (flip TTA where
the config sets "tta"); --tta / --no-tta force flip test-time augmentation (each face averaged
with its mirror image, about twice the classifier time) on or off for every model and set.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from facegender.models import modelfile
from facegender.report.heldout import measure, table

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
PREVIOUS = "82f7c96"  # last commit with the single shipped model (facegender/weights/default)


def previous_model(rev: str, dest: Path) -> Path:
    """The shipped default model folder as it was at `rev`, copied out of git history."""
    for folder in ("facegender/weights/default", "facegender/weights/fast"):
        ls = subprocess.run(["git", "ls-tree", "--name-only", f"{rev}:{folder}"], cwd=ROOT,
                            capture_output=True, text=True)
        if ls.returncode == 0:
            break
    else:
        raise SystemExit(f"no shipped model folder at {rev}")
    out = dest / f"previous-{rev}"
    out.mkdir(parents=True)
    for name in ls.stdout.split():
        blob = subprocess.run(["git", "show", f"{rev}:{folder}/{name}"], cwd=ROOT,
                              capture_output=True, check=True).stdout
        (out / name).write_bytes(blob)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=None, help="model folders or fast / accurate")
    ap.add_argument("--previous", default=PREVIOUS, help="git revision of the previous default "
                    "model, or 'none'")
    ap.add_argument("--celeba-limit", type=int, default=None, help="stratified subset of val")
    ap.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                    help="force flip test-time augmentation (face + mirror image averaged) on or "
                         "off for every model (default: as each model's config says)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--no-robustness", dest="robustness", action="store_false",
                    help="skip the fairface540 re-save check (three more passes over it)")
    a = ap.parse_args()
    models = a.models or [m for m in ("fast", "accurate")
                          if (modelfile.WEIGHTS_DIR / m / modelfile.CONFIG_NAME).is_file()]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        named = [(f"previous default ({a.previous})", previous_model(a.previous, Path(tmp)))] \
            if a.previous != "none" else []
        named += [(str(m), m) for m in models]
        for name, model in named:
            r = measure(model, DATA, a.celeba_limit, a.tta, a.robustness)
            print(f"{name}: measured in {r['seconds']} s", file=sys.stderr)
            results.append((name, r))
    print(table(results))
    if a.json:
        Path(a.json).write_text(json.dumps(dict(results), indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
