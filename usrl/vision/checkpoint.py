"""Loading US-MobileNet checkpoints (``model.pt`` / ``checkpoint.pt`` of a run folder) with
one-line errors for bad files, and the data loaders the evaluation tools share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from usrl import runtime
from usrl.utils import UsageError
from usrl.vision.data import CenterCrop, ImageFolderDataset, VisionDataError, calibration_loader, image_samples
from usrl.vision.models import USMobileNet, build_model

KIND = "usrl.vision"


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[USMobileNet, dict[str, Any]]:
    """The model of a checkpoint, in eval mode on ``device``, and the checkpoint's dictionary
    (``usrl.runtime.CheckpointError`` if the file is not a usrl.vision checkpoint)."""
    return runtime.load_model(path, KIND, build_model, device)  # type: ignore[return-value]


def load_model_for_cli(
    path: str | Path, device: str | torch.device, widths: list[float]
) -> tuple[USMobileNet, dict[str, Any]]:
    """:func:`load_model` for the command-line tools: a bad checkpoint, or a width outside the
    model's range, becomes a one-line ``UsageError``."""
    return runtime.load_model_for_cli(path, KIND, build_model, device, widths)  # type: ignore[return-value]


def data_root(given: str | None, ckpt: dict[str, Any], why: str) -> str:
    """The data folder: ``given`` (``--data``), else the one the checkpoint was trained on;
    a ``UsageError`` saying ``why`` it is needed if neither is known."""
    root = given or ckpt.get("data") or (ckpt.get("args") or {}).get("data")
    if not root:
        raise UsageError(f"--data is needed {why}: the checkpoint does not say where its data is")
    return str(root)


def eval_loaders(
    data: str | Path, split: str, classes: list[str], resolution: int, batch_size: int, workers: int, seed: int = 0
) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    """``(calibration loader, evaluation loader)``: shuffled training images and the ``split``'s
    images, both with the evaluation transform. The classes must be the checkpoint's."""
    try:
        train, found = image_samples(Path(data) / "train")
        if found != classes:
            raise VisionDataError(f"the classes of {Path(data) / 'train'} differ from the checkpoint's")
        samples, _ = image_samples(Path(data) / split, classes)
    except VisionDataError as exc:
        raise UsageError(str(exc)) from None
    calib = calibration_loader(train, classes, resolution, batch_size, workers, seed)
    dataset = ImageFolderDataset(samples, classes, CenterCrop(resolution))
    return calib, torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
