"""Data for the example notebook: chickens vs turkeys, or a synthetic stand-in with its layout.

The seed's example trains on photos in the ImageFolder layout ``train/`` and ``val/``, each with
``chickens/`` and ``turkeys/`` (120 and 100 images per class).  Those photos cannot be downloaded
here, so ``make_fowl_dataset`` draws small JPEGs in the same layout: pale round birds with a red
comb on grass (chickens) and dark birds with a fanned, striped tail (turkeys).  Point
``$CELLTRAIN_DATA`` at a folder with the real photos to use them instead.
"""
from __future__ import annotations

import math
import os
import random
from pathlib import Path

DATA_ENV = "CELLTRAIN_DATA"
CLASSES = ("chickens", "turkeys")
SPLITS = {"train": 120, "val": 100}
MARKER = ".celltrain-synthetic"


def has_layout(root: str | os.PathLike) -> bool:
    """Whether ``root`` holds train/ and val/, each with a folder per class."""
    root = Path(root)
    return all((root / split / name).is_dir() for split in SPLITS for name in CLASSES)


def make_fowl_dataset(root: str | os.PathLike, train_per_class: int = SPLITS["train"],
                      val_per_class: int = SPLITS["val"], size: int = 64,
                      seed: int = 0) -> Path:
    """Write the synthetic stand-in: ``root/{train,val}/{chickens,turkeys}/*.jpg``."""
    from PIL import Image, ImageDraw, ImageFilter
    root = Path(root)
    rng = random.Random(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for label in CLASSES:
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                scale = 4  # draw large, then shrink: smooth edges
                canvas = size * scale
                image = Image.new("RGB", (canvas, canvas), _background(rng))
                draw = ImageDraw.Draw(image)
                _draw_bird(draw, rng, canvas, turkey=(label == "turkeys"))
                image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 2)))
                image = image.resize((size, size), Image.BILINEAR)
                image.save(folder / f"{label[:-1]}_{i:04d}.jpg", quality=85)
    (root / MARKER).write_text("synthetic stand-in made by celltrain.examples."
                               "make_fowl_dataset\n")
    return root


def _background(rng: random.Random) -> tuple[int, int, int]:
    green = rng.randint(110, 190)
    return (rng.randint(40, 120), green, rng.randint(30, 90))


def _jitter(rng: random.Random, color: tuple[int, int, int], amount: int = 25):
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in color)


def _draw_bird(draw, rng: random.Random, canvas: int, turkey: bool) -> None:
    r = canvas * rng.uniform(0.18, 0.26)
    cx = canvas * rng.uniform(0.35, 0.65)
    cy = canvas * rng.uniform(0.45, 0.65)
    facing = rng.choice((-1, 1))
    if turkey:
        # The fanned tail: stripes of brown, rust and cream behind the body.
        fan = r * rng.uniform(1.5, 1.9)
        colors = [(95, 60, 35), (160, 90, 40), (225, 205, 160)]
        for k in range(14):
            a0 = math.pi + k * math.pi / 14
            a1 = a0 + math.pi / 14
            points = [(cx - facing * r * 0.3, cy)] + [
                (cx - facing * r * 0.3 + fan * math.cos(a), cy + fan * math.sin(a))
                for a in (a0, (a0 + a1) / 2, a1)]
            draw.polygon(points, fill=_jitter(rng, colors[k % 3], 15))
        body = _jitter(rng, (70, 45, 30))
    else:
        body = _jitter(rng, (238, 232, 215), 15) if rng.random() < 0.7 else \
            _jitter(rng, (200, 140, 70))
    draw.ellipse([cx - r, cy - r * 0.8, cx + r, cy + r * 0.8], fill=body)
    hx, hy, hr = cx + facing * r * 0.85, cy - r * 0.75, r * 0.38
    head = (150, 170, 200) if turkey else body
    draw.ellipse([hx - hr, hy - hr, hx + hr, hy + hr], fill=_jitter(rng, head, 15))
    beak = [(hx + facing * hr * 0.8, hy - hr * 0.2), (hx + facing * hr * 1.6, hy),
            (hx + facing * hr * 0.8, hy + hr * 0.3)]
    draw.polygon(beak, fill=(230, 180, 40))
    red = _jitter(rng, (200, 30, 30), 20)
    if turkey:   # the wattle hangs below the beak
        draw.ellipse([hx + facing * hr * 0.4 - hr * 0.25, hy + hr * 0.3,
                      hx + facing * hr * 0.4 + hr * 0.25, hy + hr * 1.3], fill=red)
    else:        # the comb sits on top of the head
        for k in range(3):
            x = hx - hr * 0.5 + k * hr * 0.5
            draw.ellipse([x - hr * 0.25, hy - hr * 1.35, x + hr * 0.25, hy - hr * 0.75],
                         fill=red)
    for leg in (-0.35, 0.35):
        x = cx + leg * r
        draw.line([(x, cy + r * 0.7), (x, cy + r * 1.2)], fill=(220, 170, 40),
                  width=max(2, int(r * 0.08)))


def ensure_fowl_data(root: str | os.PathLike | None = None) -> tuple[Path, bool]:
    """The data folder to train on, and whether it is the synthetic stand-in.

    ``$CELLTRAIN_DATA`` (the real photos, in the seed's layout) wins; otherwise the stand-in is
    made once under ``root`` (default ``./data/chickens-vs-turkeys``) and reused.
    """
    real = os.environ.get(DATA_ENV)
    if real:
        if not has_layout(real):
            raise FileNotFoundError(
                f"${DATA_ENV}={real} does not have the layout train/ and val/, each with "
                f"{' and '.join(c + '/' for c in CLASSES)}: point it at such a folder or unset "
                f"it to use the synthetic stand-in")
        return Path(real).resolve(), (Path(real) / MARKER).exists()
    root = Path(root or Path("data") / "chickens-vs-turkeys").resolve()
    if not (has_layout(root) and (root / MARKER).exists()):
        make_fowl_dataset(root)
    return root, True
