"""A model folder of dlib's CC0 gender classifier alone (arch `cydral_gender`), calibrated on the
validation faces of our sources; no training.

    python tools/make_cydral_model.py OUT DATA... [--drop disputed=1] [--limit 1500]
                                      [--landmarks dlib5|detector]

The network is facegender/models/cydral_gender.py with the package's converted weights; the
crop is its own (dlib's five landmarks onto get_face_chip's targets, padding 0.2, resized to 32
px by the predictor). `facegender calibrate` then fits temperature and unsure band on three
views of each validation face (never a test split), sources weighted alike. Package it with
`python tools/make_shipped_model.py OUT --name fast`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from safetensors.torch import save_file

from facegender.models import modelfile
from facegender.models.cydral_gender import PROVENANCE, load_expert
from facegender.models.registry import arch_defaults
from facegender.training.calibrate import calibrate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("data", nargs="+", help="sources whose val splits calibrate it")
    ap.add_argument("--drop", action="append", default=[], help="e.g. disputed=1")
    ap.add_argument("--limit", type=int, default=1500, help="val faces a source (default 1500)")
    ap.add_argument("--landmarks", choices=["dlib5", "detector"], default="dlib5")
    ap.add_argument("--framing-from", default="fast", metavar="MODEL",
                    help="copy this model's framing (the tight crops our models were trained on, "
                         "for the whole-image rule; default: fast)")
    a = ap.parse_args(argv)

    defaults = arch_defaults("cydral_gender")
    crop = dict(defaults["crop"])
    if a.landmarks == "detector":
        # BlazeFace's eyes, nose and mouth onto the 4-point template measured for dlib's chips
        # (padding 0.25), scaled about the centre to padding 0.2: (1 + 2 * 0.25) / (1 + 2 * 0.2).
        from facegender.models.dlib_resnet import DLIB_TEMPLATE

        k = 1.5 / 1.4
        crop.update(landmarks="detector",
                    template=[[round(0.5 + (x - 0.5) * k, 6), round(0.5 + (y - 0.5) * k, 6)]
                              for x, y in DLIB_TEMPLATE])
    cfg = modelfile.ModelConfig(
        arch="cydral_gender", labels=["female", "male"], input_size=defaults["input_size"],
        mean=defaults["mean"], std=defaults["std"], crop=crop,
        framing=dict(modelfile.load_config(a.framing_from).framing), threshold=0.5, temperature=1.0,
        unsure_band=0.1,
        recipe={"recipe": "dlib's gender classifier as published, calibrated here",
                "arch": "cydral_gender", **PROVENANCE,
                "made_by": "python tools/make_cydral_model.py " + " ".join(argv or sys.argv[1:])})
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        raw.mkdir()
        net = load_expert()
        save_file({k: v.contiguous() for k, v in net.state_dict().items()},
                  str(raw / modelfile.WEIGHTS_NAME))
        modelfile.save_config(cfg, raw)
        res = calibrate(raw, a.data, a.out, views=3, limit=a.limit, drop=a.drop, backend="torch",
                        progress=False)
    print({k: res[k] for k in ("faces", "before", "after")})
    shutil.rmtree(a.out / "__pycache__", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
