"""Super-resolution data in DIV2K's folder layout, checked up front.

    DIR/DIV2K_train_HR/0001.png            HR images of a split ("train", "valid")
    DIR/DIV2K_train_LR_bicubic/X2/0001x2.png   its bicubic LR images for scale 2 (optional)

When a split has no ``LR_bicubic/X<s>`` folder, LR images are made from the HR ones by PIL's
bicubic downscaling (antialiased; close to MATLAB's ``imresize`` used for DIV2K's own LR images,
not bit-identical). HR images are cropped to a multiple of the scale. Every problem (missing
folder, empty folder, non-image file, LR/HR size mismatch) raises :class:`SRDataError` naming it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


class SRDataError(ValueError):
    """The data folder is not usable; the message says why and where."""


@dataclass(frozen=True)
class Pair:
    """One HR image (and its ``(width, height)``) and, when present on disk, its LR image."""

    hr: Path
    lr: Path | None
    hr_size: tuple[int, int]


def hr_dir(root: Path, split: str) -> Path:
    return root / f"DIV2K_{split}_HR"


def lr_dir(root: Path, split: str, scale: int) -> Path:
    return root / f"DIV2K_{split}_LR_bicubic" / f"X{scale}"


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file, from its header."""
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise SRDataError(f"not a readable image: {path} ({type(exc).__name__})") from None


def find_pairs(root: str | Path, split: str, scale: int) -> list[Pair]:
    """The checked (HR, LR) pairs of a split; :class:`SRDataError` on any problem."""
    root = Path(root)
    if not root.is_dir():
        raise SRDataError(f"no such data folder: {root}")
    hdir = hr_dir(root, split)
    if not hdir.is_dir():
        raise SRDataError(f"missing folder {hdir} (expected DIV2K's layout: DIV2K_{split}_HR/)")
    files = sorted(p for p in hdir.iterdir() if not p.name.startswith("."))
    others = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file()]
    if others:
        raise SRDataError(f"not an image file: {others[0]}")
    if not files:
        raise SRDataError(f"no images in {hdir}")
    ldir = lr_dir(root, split, scale)
    pairs = []
    for hr in files:
        w, h = image_size(hr)
        if w < scale or h < scale:
            raise SRDataError(f"image too small for scale {scale}: {hr} is {w}x{h}")
        lr = None
        if ldir.is_dir():
            lr = ldir / f"{hr.stem}x{scale}{hr.suffix}"
            if not lr.is_file():
                raise SRDataError(f"missing LR image {lr} for {hr}")
            lw, lh = image_size(lr)
            if (lw, lh) != (w // scale, h // scale):
                raise SRDataError(
                    f"LR/HR size mismatch: {lr} is {lw}x{lh}, expected {w // scale}x{h // scale} for {hr} ({w}x{h}) at x{scale}"
                )
        pairs.append(Pair(hr, lr, (w, h)))
    return pairs


def load_rgb(path: Path) -> np.ndarray:
    """An image file as an ``(H, W, 3)`` uint8 RGB array."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise SRDataError(f"not a readable image: {path} ({type(exc).__name__})") from None


def crop_to_scale(hr: np.ndarray, scale: int) -> np.ndarray:
    h, w = hr.shape[:2]
    return hr[: h - h % scale, : w - w % scale]


def bicubic_resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PIL bicubic resize of a uint8 RGB array to ``(width, height)``."""
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BICUBIC))


def bicubic_downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """The LR image of an HR image (already cropped to a multiple of ``scale``)."""
    h, w = hr.shape[:2]
    return bicubic_resize(hr, (w // scale, h // scale))


def to_tensor(img: np.ndarray) -> Tensor:
    """uint8 ``(H, W, 3)`` -> float ``(3, H, W)`` in [0, 1]."""
    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div(255.0)


def to_uint8(img: Tensor) -> np.ndarray:
    """float ``(3, H, W)`` in [0, 1] (clamped) -> uint8 ``(H, W, 3)``."""
    return img.detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()


def load_pair(pair: Pair, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(LR, HR) uint8 arrays of a pair; the LR is made by bicubic downscaling if not on disk."""
    hr = crop_to_scale(load_rgb(pair.hr), scale)
    lr = load_rgb(pair.lr) if pair.lr is not None else bicubic_downscale(hr, scale)
    return lr, hr


class PatchDataset(Dataset):
    """Random aligned (LR, HR) patches with random flips and 90-degree rotations, for training.

    ``patch_size`` is the LR patch side (the HR patch is ``scale`` times larger). An epoch
    visits each image ``repeat`` times. ``cache=True`` keeps decoded images in memory
    (per process: fast, but DIV2K's 800 training images take ~7 GB).
    """

    def __init__(self, pairs: list[Pair], scale: int, patch_size: int, repeat: int = 1, cache: bool = False) -> None:
        self.pairs, self.scale, self.patch_size = pairs, scale, patch_size
        self.repeat, self.cache = max(1, repeat), cache
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.pairs) * self.repeat

    def _images(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if i in self._cache:
            return self._cache[i]
        images = load_pair(self.pairs[i], self.scale)
        lr, _ = images
        if min(lr.shape[:2]) < self.patch_size:
            raise SRDataError(
                f"{self.pairs[i].hr}: LR size {lr.shape[1]}x{lr.shape[0]} is smaller than the patch size {self.patch_size}"
            )
        if self.cache:
            self._cache[i] = images
        return images

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        lr, hr = self._images(index % len(self.pairs))
        p, s = self.patch_size, self.scale
        y = random.randint(0, lr.shape[0] - p)
        x = random.randint(0, lr.shape[1] - p)
        lr_p = lr[y : y + p, x : x + p]
        hr_p = hr[y * s : (y + p) * s, x * s : (x + p) * s]
        if random.random() < 0.5:
            lr_p, hr_p = lr_p[:, ::-1], hr_p[:, ::-1]
        if random.random() < 0.5:
            lr_p, hr_p = lr_p[::-1], hr_p[::-1]
        if random.random() < 0.5:
            lr_p, hr_p = lr_p.transpose(1, 0, 2), hr_p.transpose(1, 0, 2)
        return to_tensor(lr_p), to_tensor(hr_p)


class ImageDataset(Dataset):
    """Whole (name, LR, HR) images of a split, for evaluation."""

    def __init__(self, pairs: list[Pair], scale: int) -> None:
        self.pairs, self.scale = pairs, scale

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[str, Tensor, Tensor]:
        lr, hr = load_pair(self.pairs[index], self.scale)
        return self.pairs[index].hr.stem, to_tensor(lr), to_tensor(hr)
