"""ImageFolder data for the vision trainer: ``DIR/train/<class>/*.jpg`` and ``DIR/val/<class>/*``
(ImageNet's layout), with ImageNet's standard training augmentation and evaluation transforms,
written with Pillow and torch only."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance
from torch import Tensor

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VisionDataError(ValueError):
    """A data folder is missing, empty or inconsistent (reported as one line by the CLIs)."""


def find_classes(root: str | Path) -> list[str]:
    """The class names of an ImageFolder tree: its sub-folders, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise VisionDataError(f"no such folder: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise VisionDataError(f"{root} has no class folders (expected {root}/<class>/<image>)")
    return classes


def image_samples(root: str | Path, classes: list[str] | None = None) -> tuple[list[tuple[Path, int]], list[str]]:
    """``[(image path, class index)]`` of an ImageFolder tree and its class names.

    ``classes`` (e.g. the training split's) fixes the names and their order; the tree must then
    have exactly these folders. Every class needs at least one image.
    """
    root = Path(root)
    found = find_classes(root)
    if classes is not None and found != list(classes):
        missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
        raise VisionDataError(f"{root}: classes differ from the training split's (missing {missing}, extra {extra})")
    samples: list[tuple[Path, int]] = []
    for index, name in enumerate(found):
        files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not files:
            raise VisionDataError(f"class folder {root / name} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        samples += [(f, index) for f in files]
    return samples, found


@dataclass(frozen=True)
class Augment:
    """Training augmentation: random-resized crop to ``size`` (area fraction in ``crop_scale``,
    aspect ratio in 3/4..4/3), horizontal flip with probability ``flip``, and brightness /
    contrast / saturation jitter by up to ``jitter`` in random order."""

    size: int
    crop_scale: tuple[float, float] = (0.08, 1.0)
    flip: float = 0.5
    jitter: float = 0.4

    def __call__(self, img: Image.Image) -> Image.Image:
        img = self._crop(img)
        if random.random() < self.flip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.jitter > 0:
            enhancers = [ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color]
            random.shuffle(enhancers)
            for enhancer in enhancers:
                img = enhancer(img).enhance(random.uniform(max(0.0, 1 - self.jitter), 1 + self.jitter))
        return img

    def _crop(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        area = w * h
        log_lo, log_hi = math.log(3 / 4), math.log(4 / 3)
        for _ in range(10):
            target = area * random.uniform(*self.crop_scale)
            aspect = math.exp(random.uniform(log_lo, log_hi))
            cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < cw <= w and 0 < ch <= h:
                x, y = random.randint(0, w - cw), random.randint(0, h - ch)
                return img.resize((self.size, self.size), Image.Resampling.BILINEAR, box=(x, y, x + cw, y + ch))
        side = min(w, h)  # fallback: the central square
        x, y = (w - side) // 2, (h - side) // 2
        return img.resize((self.size, self.size), Image.Resampling.BILINEAR, box=(x, y, x + side, y + side))


@dataclass(frozen=True)
class CenterCrop:
    """Evaluation transform: resize the shorter side to ``size / crop_fraction`` (256 for 224),
    then take the central ``size`` x ``size`` square."""

    size: int
    crop_fraction: float = 0.875

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        short = round(self.size / self.crop_fraction)
        nw, nh = (short, max(short, round(h * short / w))) if w <= h else (max(short, round(w * short / h)), short)
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
        x, y = (nw - self.size) // 2, (nh - self.size) // 2
        return img.crop((x, y, x + self.size, y + self.size))


def to_tensor(img: Image.Image) -> Tensor:
    """An RGB image as a normalised ``(3, H, W)`` float tensor (ImageNet mean and std)."""
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images of an ImageFolder tree as ``(tensor, class index)`` after ``transform``."""

    def __init__(self, samples: list[tuple[Path, int]], classes: list[str], transform: Augment | CenterCrop) -> None:
        self.samples, self.classes, self.transform = samples, classes, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        try:
            with Image.open(path) as raw:
                img = raw.convert("RGB")
        except OSError as exc:
            raise VisionDataError(f"cannot read image {path}: {exc}") from None
        return to_tensor(self.transform(img)), label


def check_images(samples: list[tuple[Path, int]]) -> None:
    """Open every image's header (fast; no decoding) so an unreadable file is reported up front."""
    for path, _ in samples:
        try:
            with Image.open(path) as img:
                img.size  # noqa: B018 - reading the header is the check
        except OSError:
            raise VisionDataError(f"cannot read image {path}: not an image Pillow can open") from None


def calibration_loader(
    samples: list[tuple[Path, int]], classes: list[str], resolution: int, batch_size: int, workers: int,
    seed: int = 0, pin_memory: bool = False,
) -> torch.utils.data.DataLoader:  # fmt: skip
    """Training images with the evaluation transform in one fixed shuffled order (``seed``): the
    batches BatchNorm calibration reads. Every pass yields the same batches, so every width, every
    process of a distributed run and ``usrl.vision.evaluate`` with the trainer's batch size all
    calibrate on the same images."""
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed)).tolist()
    dataset = torch.utils.data.Subset(ImageFolderDataset(samples, classes, CenterCrop(resolution)), order)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers, pin_memory=pin_memory)
