"""The built-in image+caption set: coloured shapes, counted, rendered with Pillow, offline and the same
on every machine.

Each image shows 1-4 shapes of one colour and one kind on a light background, one per cell of a 2x2
grid (so they never overlap), with jittered size, place and tint; its caption says what is there:
"three blue triangles." The held-out split is half new images of the training combinations ("seen"
pairs: can the model read an image?) and half colour-shape combinations that no training image has
("unseen" pairs: a red circle is never shown in training, red things and circles are), which measures
whether it composes attributes rather than recalls pairs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageDraw

from kiln.images.readers import ImageDoc

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "yellow": (230, 200, 30),
    "purple": (135, 55, 175),
    "orange": (240, 125, 20),
}
SHAPES = ("circle", "square", "triangle", "cross")
COUNTS = ("one", "two", "three", "four")
HELD_OUT = {("red", "circle"), ("green", "square"), ("blue", "triangle"), ("yellow", "cross")}
"""Colour-shape pairs only the held-out split shows: every colour and shape is trained, these pairings are not."""
ATTRIBUTES = ("colour", "shape", "count")
SCALE = 4
"""Shapes are drawn at 4x and downsampled, for smooth edges."""


def caption(colour: str, shape: str, count: int) -> str:
    """'a red circle.', 'three blue triangles.'"""
    if count == 1:
        return f"a {colour} {shape}."
    return f"{COUNTS[count - 1]} {colour} {shape}{'es' if shape == 'cross' else 's'}."


_WORDS = re.compile(r"[a-z]+")
_SHAPE_WORDS = {word: shape for shape in SHAPES for word in (shape, shape + ("es" if shape == "cross" else "s"))}


def parse_caption(text: str) -> dict[str, str | int | None]:
    """The first colour, shape and count a caption names (None where it names none); 'a'/'an' is one."""
    found: dict[str, str | int | None] = dict.fromkeys(ATTRIBUTES)
    for word in _WORDS.findall(text.lower()):
        if found["count"] is None and word in COUNTS + ("a", "an"):
            found["count"] = COUNTS.index(word) + 1 if word in COUNTS else 1
        elif found["colour"] is None and word in COLOURS:
            found["colour"] = word
        elif found["shape"] is None and word in _SHAPE_WORDS:
            found["shape"] = _SHAPE_WORDS[word]
    return found


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)
    else:  # cross: two bars a third of the side wide
        w = (x1 - x0) // 3
        draw.rectangle((x0, y0 + w, x1, y1 - w), fill=fill)
        draw.rectangle((x0 + w, y0, x1 - w, y1), fill=fill)


def render(colour: str, shape: str, count: int, size: int, rng: np.random.Generator) -> Image.Image:
    """One image (size x size RGB) of `count` shapes in distinct cells of a 2x2 grid."""
    big = size * SCALE
    background = tuple(int(v) for v in rng.integers(225, 256, 3))
    image = Image.new("RGB", (big, big), background)
    draw = ImageDraw.Draw(image)
    cell = big // 2
    base = np.array(COLOURS[colour])
    for c in rng.permutation(4)[:count]:
        side = int(rng.integers(int(cell * 0.55), int(cell * 0.85)))
        x = (c % 2) * cell + int(rng.integers(0, cell - side + 1))
        y = (c // 2) * cell + int(rng.integers(0, cell - side + 1))
        tint = tuple(int(v) for v in np.clip(base + rng.integers(-20, 21, 3), 0, 255))
        _draw(draw, shape, (x, y, x + side - 1, y + side - 1), tint)  # type: ignore[arg-type]
    return image.resize((size, size), Image.Resampling.LANCZOS)


def combinations(pairs: str) -> list[tuple[str, str, int]]:
    """(colour, shape, count) of the 'seen' colour-shape pairs (all but HELD_OUT) or the 'unseen' ones."""
    return [
        (colour, shape, count)
        for colour in COLOURS
        for shape in SHAPES
        for count in range(1, len(COUNTS) + 1)
        if ((colour, shape) in HELD_OUT) == (pairs == "unseen")
    ]


def shapes_set(num_train: int, num_val: int, size: int, seed: int = 0) -> Iterator[ImageDoc]:
    """The set's documents in a fixed order (training images, then held-out ones), each with its
    attributes, split and pairs ('seen' or 'unseen') in `meta`. Training images draw from the seen
    combinations; held-out images alternate seen and unseen ones."""
    seen, unseen = combinations("seen"), combinations("unseen")
    for split, n in (("train", num_train), ("val", num_val)):
        rng = np.random.default_rng([seed, 0 if split == "train" else 1])
        for i in range(n):
            pairs = "unseen" if split == "val" and i % 2 == 0 else "seen"
            combos = unseen if pairs == "unseen" else seen
            colour, shape, count = combos[int(rng.integers(len(combos)))]
            key = f"shapes-{split}-{i:06d}"
            yield ImageDoc(
                key,
                f"shapes:{key}",
                [render(colour, shape, count, size, rng)],
                caption(colour, shape, count),
                {"colour": colour, "shape": shape, "count": count, "split": split, "pairs": pairs},
            )
