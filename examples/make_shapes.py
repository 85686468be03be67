"""Write examples/shapes/: a small image-folder dataset of drawn circles, squares and triangles.

    python examples/make_shapes.py          # (re)writes examples/shapes/{train,test}/<class>/

Each image is a filled shape of a random colour, size and place on a random light background,
drawn with Pillow. Sizes vary from 36 to 56 pixels a side and some images are RGBA with a
transparent background, some JPEG, so that specs/shapes-cnn.yaml shows resizing, alpha
compositing and mixed formats. The same seed always writes the same files.
"""

import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent / "shapes"
CLASSES = ("circle", "square", "triangle")
COUNTS = {"train": 40, "test": 12}  # images per class


def shape_image(kind: str, rng: np.random.Generator) -> Image.Image:
    side = int(rng.integers(36, 57))
    transparent = rng.random() < 0.3
    background = (0, 0, 0, 0) if transparent else tuple(int(v) for v in rng.integers(170, 256, 3))
    img = Image.new("RGBA" if transparent else "RGB", (side, side), background)
    draw = ImageDraw.Draw(img)
    colour = tuple(int(v) for v in rng.integers(0, 150, 3))
    r = side * rng.uniform(0.22, 0.38)
    cx, cy = (side / 2 + rng.uniform(-0.12, 0.12) * side for _ in range(2))
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif kind == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return img


def main() -> None:
    shutil.rmtree(ROOT, ignore_errors=True)
    rng = np.random.default_rng(0)
    for split, count in COUNTS.items():
        for kind in CLASSES:
            folder = ROOT / split / kind
            folder.mkdir(parents=True)
            for i in range(count):
                img = shape_image(kind, rng)
                if img.mode == "RGB" and rng.random() < 0.25:
                    img.save(folder / f"{i:03d}.jpg", quality=90)
                else:
                    img.save(folder / f"{i:03d}.png", optimize=True)
    print(f"wrote {sum(COUNTS.values()) * len(CLASSES)} images under {ROOT}")


if __name__ == "__main__":
    main()
