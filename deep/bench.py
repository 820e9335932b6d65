"""Throughput of the networks on this machine: ``python -m lensbench.deep.bench``.

Prints cutouts/s for training (forward + backward + AdamW step, batch 64) and inference (batch
256) of each network at 64x64x4 and 101x101x4, float32, channels-last, with the thread count
torch uses (set ``--threads``). Random inputs: the cost does not depend on the pixel values.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from lensbench.deep.nets import build_net, count_parameters
from lensbench.deep.train import deterministic

NETWORKS = {
    "resnet-w16-d1": ("resnet", {}),  # the default of the resnet and committee methods
    "resnet-w32-d2": ("resnet", {"width": 32, "depth": 2}),
    "deeplens": ("deeplens", {}),
}
SIZES = (64, 101)


def throughput(net: torch.nn.Module, size: int, bands: int = 4, *, train: bool,
               batch: int, seconds: float = 3.0) -> float:
    """Cutouts per second, timed over at least ``seconds`` after one warm-up batch."""
    x = torch.randn(batch, bands, size, size).contiguous(memory_format=torch.channels_last)
    net.to(memory_format=torch.channels_last)  # as in the training loop
    y = (torch.rand(batch) > 0.5).float()
    if train:
        net.train()
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)

        def step():
            loss = F.binary_cross_entropy_with_logits(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    else:
        net.eval()

        def step():
            with torch.inference_mode():
                net(x)
    step()
    n, start = 0, time.perf_counter()
    while True:
        step()
        n += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--nets", default=",".join(NETWORKS),
                        help="comma-separated subset of: " + ", ".join(NETWORKS))
    args = parser.parse_args(argv)
    with deterministic(0, args.threads):
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; cutouts/s")
        columns = " | ".join(f"train {s}x{s}x4 | infer {s}x{s}x4" for s in SIZES)
        print(f"| network | params | {columns} |")
        print("|---|---:|" + "---:|" * (2 * len(SIZES)))
        for label in args.nets.split(","):
            arch, kwargs = NETWORKS[label.strip()]
            net = build_net(arch, 4, **kwargs)
            cells = []
            for size in SIZES:
                cells.append(throughput(net, size, train=True, batch=64, seconds=args.seconds))
                cells.append(throughput(net, size, train=False, batch=256,
                                        seconds=args.seconds))
            print(f"| {label} | {count_parameters(net) / 1e6:.2f} M | "
                  + " | ".join(f"{c:,.0f}" for c in cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
