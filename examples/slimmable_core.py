"""The slimmable core end to end: train one small CNN at all widths, then use any width.

Trains a universally slimmable CNN on a generated 10-class image task with the sandwich rule
and inplace distillation, calibrates BatchNorm at a few widths, and prints accuracy, MACs and
parameters per width; then exports one width as plain torch layers. Runs in under a minute on a CPU.

    python examples/slimmable_core.py [--steps 300] [--seed 0]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from usrl.nn import (
    USBatchNorm2d,
    USConv2d,
    USLinear,
    calibrate_bn,
    export_fixed_width,
    kl_divergence,
    make_slimmable,
    profile,
    sandwich_step,
    sandwich_widths,
    width,
)


def make_data(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy 16x16 RGB images of 10 classes: each class is an oriented colour grating."""
    labels = torch.randint(0, 10, (n,), generator=generator)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    angle = labels.float() * torch.pi / 10
    phase = torch.cos(angle)[:, None, None] * xx + torch.sin(angle)[:, None, None] * yy
    img = torch.stack([torch.sin(6 * phase), torch.cos(4 * phase), torch.sin(3 * phase + 1)], dim=1)
    return img + 2.5 * torch.randn(img.shape, generator=generator), labels


def build() -> nn.Sequential:
    """A small universally slimmable CNN (width range 0.25-1.0)."""
    return make_slimmable(
        nn.Sequential(
            USConv2d(3, 32, 3, padding=1, slim_in=False, bias=False),
            USBatchNorm2d(32),
            nn.ReLU(),
            USConv2d(32, 64, 3, stride=2, padding=1, bias=False),
            USBatchNorm2d(64),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            USLinear(64, 10, slim_out=False),
        ),
        (0.25, 1.0),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    x_train, y_train = make_data(4096, gen)
    x_test, y_test = make_data(1024, gen)
    net = build()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    for step in range(args.steps):
        idx = torch.randint(0, len(x_train), (128,), generator=gen)
        x, y = x_train[idx], y_train[idx]
        opt.zero_grad()
        # the largest width learns the labels and teaches the others (KL to its soft labels)
        result = sandwich_step(
            net,
            sandwich_widths(4, 0.25, 1.0, gen),
            forward=lambda _learns_own, x=x: net(x),
            own_loss=lambda logits, _first, y=y: F.cross_entropy(logits, y),
            distill=kl_divergence,
            backward=lambda loss: loss.backward(),
        )
        opt.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  full-width loss {result.widths[0].loss:.3f}", flush=True)

    print(f"\n{'width':>6} {'accuracy':>9} {'MACs':>9} {'params':>8}")
    batches = list(x_train[:1024].split(256))
    for w in (0.25, 0.4, 0.5, 0.75, 1.0):
        calibrate_bn(net, batches, w)
        net.eval()
        with width(net, w), torch.no_grad():
            acc = (net(x_test).argmax(1) == y_test).float().mean().item()
        cost = profile(net, (3, 16, 16), w)
        print(f"{w:6.2f} {acc:9.3f} {cost['macs']:9d} {cost['params']:8d}")
        net.train()

    net.eval()
    exported = export_fixed_width(net, 0.5)
    with width(net, 0.5), torch.no_grad():
        assert torch.allclose(exported(x_test), net(x_test), atol=1e-5)
    print(f"\nwidth 0.5 exported as plain torch layers:\n{exported}")


if __name__ == "__main__":
    main()
