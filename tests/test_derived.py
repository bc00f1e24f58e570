"""The size dial's derived shape: heads for a width."""

from kiln.derived import dial_heads, dial_width
from kiln.models.config import ModelConfig


def test_heads_follow_the_head_width_and_divide_the_width():
    assert dial_heads(256, 128) == 2
    assert dial_heads(320, 128) == 2  # 320 / 128 leaves a remainder: 2 heads of 160
    assert dial_heads(768, 64) == 12
    assert dial_heads(128, 128) == 1  # one head no wider than head_width


def test_a_width_one_head_would_overflow_gets_two():
    assert dial_heads(192, 128) == 2  # not 1 head of 192
    assert dial_heads(96, 64) == 2
    assert dial_heads(65, 64) == 1  # an odd width cannot split evenly
    assert dial_heads(198, 128) == 1  # 2 heads of 99 would be odd (RoPE rotates pairs)


def test_the_dial_at_depth_3_with_the_recipe_heads():
    model = ModelConfig(depth=3, head_width=128, vocab_size=256)
    assert dial_width(3, model.aspect) == model.dim == 192
    assert (model.num_heads, model.head_dim) == (2, 96)
