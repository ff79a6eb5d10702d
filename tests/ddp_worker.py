"""Run by tests/test_distributed.py under torchrun: trains with facegender.train and records,
after every optimizer step, a digest of this rank's weights (steps-RANK.json in the output's
parent folder), so the test can compare the ranks step by step."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from torch.optim.optimizer import register_optimizer_step_post_hook

import facegender

digests: list[str] = []


def _after_step(optimizer, args, kwargs) -> None:
    h = hashlib.sha1()
    for group in optimizer.param_groups:
        for p in group["params"]:
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
    digests.append(h.hexdigest())


if __name__ == "__main__":
    data, out, recipe = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    register_optimizer_step_post_hook(_after_step)
    facegender.train(data, out, **recipe)
    rank = os.environ.get("RANK", "0")
    (out.parent / f"steps-{rank}.json").write_text(json.dumps(digests))
