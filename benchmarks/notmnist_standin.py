"""A notMNIST-layout stand-in rendered from the machine's own fonts, for runs where notMNIST cannot be downloaded.

    python benchmarks/notmnist_standin.py data/notmnist_standin            # 38 fonts x 50 = 1,900 per letter
    python -m apa_lightning experiment=notmnist_code7 paths.data_dir=data/notmnist_standin

Writes ``<folder>/notMNIST_small/A/*.png`` ... ``J/*.png``: the letters A-J as 28x28 grey PNGs (white glyph on
black, as notMNIST), each drawn ``--per-font`` times in every TrueType/OpenType font under ``--fonts`` at a random
height (60-95 % of the frame), rotation (+-8 degrees) and offset (+-2 pixels), rendered at 4x and downsampled, so
the edges are grey like notMNIST's. It is NOT notMNIST (a few dozen clean fonts instead of thousands of odd ones):
figures measured on it say how the code sizes compare, not what the lecture's networks reach. Seeded: the same
fonts and arguments give the same files. Refuses a folder that already holds ``notMNIST_small/``.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LETTERS = "ABCDEFGHIJ"
SIZE, SCALE = 28, 4  # output side; rendering resolution factor


def font_files(root: Path) -> list[Path]:
    """The .ttf / .otf files under ``root``, sorted (the order seeds the drawing)."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in {".ttf", ".otf"})


def draws_every_letter(font_path: Path) -> bool:
    """Whether the font draws each of A-J with some ink (symbol fonts and display-only fonts draw nothing)."""
    font = ImageFont.truetype(str(font_path), SIZE * SCALE)
    for letter in LETTERS:
        left, top, right, bottom = font.getbbox(letter)
        if right <= left or bottom <= top:
            return False
    return True


def render(font_path: Path, letter: str, rng: np.random.Generator) -> Image.Image:
    """``letter`` in ``font_path`` as a 28x28 grey image: the glyph's box scaled to a random share of the frame,
    rotated and shifted a little."""
    big = SIZE * SCALE
    font = ImageFont.truetype(str(font_path), big)
    left, top, right, bottom = font.getbbox(letter)
    glyph = Image.new("L", (right - left, bottom - top), 0)
    ImageDraw.Draw(glyph).text((-left, -top), letter, fill=255, font=font)
    height = rng.uniform(0.6, 0.95) * big
    width = min(glyph.width * height / glyph.height, 0.95 * big)
    glyph = glyph.resize((max(1, round(width)), max(1, round(height))), Image.LANCZOS)
    glyph = glyph.rotate(rng.uniform(-8, 8), resample=Image.BICUBIC, expand=True)
    canvas = Image.new("L", (big, big), 0)
    dx, dy = (rng.uniform(-2, 2, size=2) * SCALE).round().astype(int)
    canvas.paste(glyph, ((big - glyph.width) // 2 + dx, (big - glyph.height) // 2 + dy))
    return canvas.resize((SIZE, SIZE), Image.LANCZOS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="where notMNIST_small/ is written")
    parser.add_argument("--fonts", type=Path, default=Path("/usr/share/fonts"), help="folder searched for fonts")
    parser.add_argument("--per-font", type=int, default=50, help="drawings of each letter in each font")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    found = font_files(args.fonts)
    fonts = [f for f in found if draws_every_letter(f)]
    if not fonts:
        print(
            f"error: no .ttf or .otf font under {args.fonts} draws the letters A-J; name a folder of text fonts "
            "with --fonts.",
            file=sys.stderr,
        )
        return 1
    if len(fonts) < len(found):
        print(
            f"left out {len(found) - len(fonts)} fonts that do not draw A-J: "
            f"{', '.join(f.name for f in found if f not in fonts)}"
        )
    target = args.folder / "notMNIST_small"
    if target.exists():
        print(f"error: {target} already exists; remove it or name another folder.", file=sys.stderr)
        return 1
    partial = args.folder / "notMNIST_small.partial"  # renamed when complete: no half-written set under the name
    rng = np.random.default_rng(args.seed)
    stems = Counter(font.stem for font in fonts)  # a stem found in two folders gets the font's number too
    names = [font.stem if stems[font.stem] == 1 else f"{font.stem}-{n}" for n, font in enumerate(fonts)]
    for letter in LETTERS:
        (partial / letter).mkdir(parents=True, exist_ok=True)
        for font_path, name in zip(fonts, names, strict=True):
            for i in range(args.per_font):
                render(font_path, letter, rng).save(partial / letter / f"{name}_{i:03d}.png")
    partial.rename(target)
    print(
        f"{target}: {len(LETTERS)} letters x {len(fonts)} fonts x {args.per_font} = "
        f"{len(LETTERS) * len(fonts) * args.per_font} images"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
