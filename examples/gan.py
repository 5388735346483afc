"""A small GAN with Ignite: learn a mixture of 8 Gaussians on a circle.

    python examples/gan.py                    # about 10 s of CPU; images in gan-output/
    tensorboard --logdir runs                 # training/0 is the discriminator loss, training/1 the generator's

The update function steps two optimizers and returns ``(d_loss, g_loss)``: the training history
holds these tuples, and the plugins that plot means (TensorBoard, Visdom, the progress bar) show
both numbers. An ad-hoc handler saves a scatter plot of generated points every few epochs.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from importlib.metadata import entry_points
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ignite.trainer import Trainer, TrainingEvents

logger = logging.getLogger("gan")

MODES = 8
RADIUS = 2.0
STD = 0.05
NOISE = 8  # size of the generator's input


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--epochs", type=int, default=100, help="epochs of 16 iterations each (default: 100)")
    parser.add_argument("--batch-size", type=int, default=256, help="batch size (default: 256)")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate of both networks (default: 0.002)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--out", default="gan-output", help="folder for the scatter plots (default: gan-output)")
    parser.add_argument(
        "--plot-every", type=int, default=20, help="save a plot every N epochs and at the end (default: 20)"
    )
    parser.add_argument("--log-dir", default="runs", help="TensorBoard logs go to a new folder in it (default: runs)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch (default: 1: a model this small gains nothing from more, and they slow it "
        "down badly on busy cores)",
    )
    return parser.parse_args(argv)


def mixture(count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``count`` points from 8 Gaussians evenly spaced on a circle of radius 2."""
    modes = torch.randint(MODES, (count,), generator=generator)
    angles = modes.float() * (2 * math.pi / MODES)
    centres = RADIUS * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return centres + STD * torch.randn(count, 2, generator=generator)


def mlp(inputs: int, outputs: int, hidden: int = 128) -> nn.Module:
    return nn.Sequential(
        nn.Linear(inputs, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, outputs),
    )


def mode_coverage(points: torch.Tensor) -> tuple[int, float]:
    """(modes covered, share of points near a mode): a point is near a mode within 3 standard
    deviations of its centre, and a mode is covered when at least a third of its fair share
    (1/24 of the points) is near it. A ring smeared around the circle covers none."""
    angles = torch.arange(MODES).float() * (2 * math.pi / MODES)
    centres = RADIUS * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    nearest = torch.cdist(points, centres).min(dim=1)
    near = nearest.values < 3 * STD
    counts = torch.bincount(nearest.indices[near], minlength=MODES)
    return int((counts >= len(points) / (3 * MODES)).sum()), float(near.float().mean())


def save_scatter(path: str, real: torch.Tensor, fake: torch.Tensor, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    axes.scatter(real[:, 0], real[:, 1], s=4, c="0.75", label="data")
    axes.scatter(fake[:, 0], fake[:, 1], s=4, c="tab:red", alpha=0.6, label="generated")
    axes.set_xlim(-3, 3)
    axes.set_ylim(-3, 3)
    axes.set_aspect("equal")
    axes.set_title(title)
    axes.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main(argv: list[str] | None = None) -> Trainer:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)

    data = mixture(4096)
    loader = DataLoader(TensorDataset(data), batch_size=args.batch_size, shuffle=True, drop_last=True)
    generator, discriminator = mlp(NOISE, 2), mlp(2, 1)
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=args.lr, betas=(0.5, 0.999))
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=args.lr, betas=(0.5, 0.999))

    def training_update_function(batch: list[torch.Tensor]) -> tuple[float, float]:
        (real,) = batch
        ones, zeros = torch.ones(len(real), 1), torch.zeros(len(real), 1)
        # Discriminator: real points are 1, generated ones 0.
        fake = generator(torch.randn(len(real), NOISE))
        d_optimizer.zero_grad()
        d_loss = F.binary_cross_entropy_with_logits(discriminator(real), ones)
        d_loss = d_loss + F.binary_cross_entropy_with_logits(discriminator(fake.detach()), zeros)
        d_loss.backward()
        d_optimizer.step()
        # Generator: make the discriminator call its points real (the non-saturating loss).
        g_optimizer.zero_grad()
        g_loss = F.binary_cross_entropy_with_logits(discriminator(fake), ones)
        g_loss.backward()
        g_optimizer.step()
        return d_loss.item(), g_loss.item()

    fixed_noise = torch.randn(1000, NOISE)  # the same inputs in every plot, so they are comparable
    real_sample = data[:1000]
    images: list[str] = []

    def plot_samples(trainer: Trainer, every: int) -> None:
        last = trainer.current_epoch == trainer.max_epochs
        if trainer.current_epoch % every and not last:
            return
        with torch.no_grad():
            fake = generator(fixed_noise)
        covered, share = mode_coverage(fake)
        path = os.path.join(args.out, f"epoch_{trainer.current_epoch:03d}.png")
        means = trainer.training_history.run_means()  # {"0": mean d_loss, "1": mean g_loss} of this epoch
        title = f"epoch {trainer.current_epoch}: {covered}/{MODES} modes, {share:.0%} of points near one"
        save_scatter(path, real_sample, fake, title)
        images.append(path)
        logger.info(
            "Epoch %d: d_loss %.3f, g_loss %.3f, %d/%d modes covered, %.0f%% of points near a mode, saved %s",
            trainer.current_epoch,
            means["0"],
            means["1"],
            covered,
            MODES,
            100 * share,
            path,
        )

    run_name = time.strftime("gan-%Y%m%d-%H%M%S")
    plugins: dict[str, Any] = {}
    installed = {entry_point.name for entry_point in entry_points(group="ignite.plugins")}
    if "tensorboard" in installed:
        plugins["tensorboard"] = {"dir": os.path.join(args.log_dir, run_name), "every_iterations": 4}
    if "visdom" in installed:
        plugins["visdom"] = {"env": "gan", "every_iterations": 4}

    trainer = Trainer(loader, training_update_function, plugins=plugins)
    trainer.add_event_handler(TrainingEvents.EPOCH_COMPLETED, plot_samples, args.plot_every)
    start = time.perf_counter()
    trainer.run(max_epochs=args.epochs)
    seconds = time.perf_counter() - start

    with torch.no_grad():
        covered, share = mode_coverage(generator(fixed_noise))
    print(
        f"Trained {trainer.current_epoch} epochs ({trainer.current_iteration} iterations) in {seconds:.1f} s: "
        f"the generator covers {covered}/{MODES} modes, {share:.0%} of its points near one."
    )
    print(f"Plots: {', '.join(images[-2:])} ... ({len(images)} in {args.out}/)")
    if "tensorboard" in trainer.plugins:
        print(f"TensorBoard: tensorboard --logdir {args.log_dir}")
    return trainer


if __name__ == "__main__":
    # Show ignite's INFO lines (active plugins, epoch means, early stopping, checkpoints).
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main(sys.argv[1:])
