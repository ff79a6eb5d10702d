"""Training throughput (images/s) of every registered architecture on this machine's CPU.

    python benchmarks/train_speed.py [--size 112] [--batch 64] [--steps 6] [--threads N]

One forward + backward + AdamW step per timing on a random batch (no data loading), after two
warm-up steps; prints the median of --steps timings. All architectures run in one process so
their ratios hold on a noisy machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from facegender.models.registry import REGISTRY, build_model


def measure(arch: str, size: int, batch: int, steps: int) -> tuple[float, int]:
    torch.manual_seed(0)
    model = build_model(arch)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 2, (batch,))
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return batch / statistics.median(times), sum(p.numel() for p in model.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"training throughput at {a.size}px, batch {a.batch}, {torch.get_num_threads()} threads,"
          f" torch {torch.__version__}")
    print(f"{'architecture':<22} {'params':>10} {'img/s':>8}")
    for arch in REGISTRY:
        ips, n = measure(arch, a.size, a.batch, a.steps)
        print(f"{arch:<22} {n / 1e6:>9.2f}M {ips:>8.1f}")


if __name__ == "__main__":
    main()
