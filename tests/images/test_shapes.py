"""The built-in shapes set: deterministic, captions that say what is drawn, a held-out split of new
colour-shape combinations."""

import numpy as np

from kiln.images.shapes import COLOURS, HELD_OUT, SHAPES, caption, combinations, parse_caption, shapes_set


def test_the_set_is_the_same_every_time_and_held_out_pairs_are_new():
    a = list(shapes_set(40, 20, 32, seed=3))
    b = list(shapes_set(40, 20, 32, seed=3))
    assert [d.key for d in a] == [d.key for d in b]
    assert all(np.array_equal(np.asarray(x.images[0]), np.asarray(y.images[0])) for x, y in zip(a, b))
    train = {(d.meta["colour"], d.meta["shape"]) for d in a if d.meta["split"] == "train"}
    val = {(d.meta["colour"], d.meta["shape"]) for d in a if d.meta["pairs"] == "unseen"}
    assert {d.meta["pairs"] for d in a if d.meta["split"] == "val"} == {"seen", "unseen"}
    assert val <= HELD_OUT and not (train & HELD_OUT)
    # every colour and every shape of the held-out pairs is trained, in other pairings
    trained = {c for c, _, _ in combinations("seen")}, {s for _, s, _ in combinations("seen")}
    assert all(c in trained[0] and s in trained[1] for c, s in HELD_OUT)


def test_captions_parse_back_to_their_attributes():
    for colour in COLOURS:
        for shape in SHAPES:
            for count in (1, 2, 3, 4):
                text = caption(colour, shape, count)
                assert parse_caption(text) == {"colour": colour, "shape": shape, "count": count}, text
    assert parse_caption("two crosses, green") == {"colour": "green", "shape": "cross", "count": 2}
    assert parse_caption("nothing here") == {"colour": None, "shape": None, "count": None}


def test_the_drawn_colour_is_the_captioned_one():
    for doc in shapes_set(60, 0, 32, seed=1):
        pixels = np.asarray(doc.images[0], dtype=np.float64).reshape(-1, 3)
        ink = pixels[pixels.min(axis=1) < 200]  # not the light background
        nearest = min(COLOURS, key=lambda c: np.abs(np.median(ink, axis=0) - COLOURS[c]).sum())
        assert nearest == doc.meta["colour"], doc.key
