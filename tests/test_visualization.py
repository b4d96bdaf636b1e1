"""Palettes, colourised masks, overlays and the validation comparison image."""

import numpy as np
import pytest

from segaccel.visualization import colorize_mask, draw_legend, get_palette, make_comparison, overlay_mask

PALETTE = [[10, 20, 30], [200, 100, 0], [0, 255, 128]]


def test_palette_is_deterministic_distinct_and_never_black():
    palette = get_palette(300)
    assert palette == get_palette(300)
    assert get_palette(5) == palette[:5]
    assert get_palette(5, seed=1) != get_palette(5)
    assert len({tuple(c) for c in palette}) == 300
    assert all(len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in palette)
    assert [0, 0, 0] not in palette  # black means "ignored"


def test_colorize_mask_colours_and_black_for_ignored():
    mask = np.array([[0, 1, 2], [255, 3, -1]])
    colours = colorize_mask(mask, PALETTE)
    assert colours.shape == (2, 3, 3) and colours.dtype == np.uint8
    assert colours[0].tolist() == PALETTE
    assert colours[1].tolist() == [[0, 0, 0]] * 3  # 255, out of the palette, negative
    assert colorize_mask(mask[None], PALETTE).shape == (2, 3, 3)  # (1, H, W) is accepted


def test_overlay_blends_one_pixel():
    image = np.array([[[100, 50, 250], [7, 8, 9]]], dtype=np.uint8)
    mask = np.array([[1, 255]])
    out = overlay_mask(image, mask, PALETTE, alpha=0.25)
    # 0.75 * (100, 50, 250) + 0.25 * (200, 100, 0) = (125, 62.5, 187.5) -> rounded half to even
    assert out[0, 0].tolist() == [125, 62, 188]
    assert out[0, 1].tolist() == [7, 8, 9]  # ignored pixels keep the image
    assert out.dtype == np.uint8


def test_overlay_checks_sizes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        overlay_mask(np.zeros((2, 3, 3), np.uint8), np.zeros((3, 2), np.int64), PALETTE)
    with pytest.raises(ValueError, match="integer"):
        colorize_mask(np.zeros((2, 2), np.float32), PALETTE)


def test_legend_lists_classes_in_rows_or_columns():
    names = ["road", "sidewalk", "building", "wall"]
    column = draw_legend(names, get_palette(4))
    wrapped = draw_legend(names, get_palette(4), max_width=2 * column.width)
    assert column.mode == "RGB"
    assert wrapped.width == 2 * column.width
    assert wrapped.height < column.height
    swatch = np.asarray(column)[4 + 6, 4 + 6]  # centre of the first swatch
    assert swatch.tolist() == get_palette(4)[0]


def test_comparison_is_three_panels_over_a_legend():
    h, w = 24, 40  # non-square
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    gt = rng.integers(0, 3, (h, w))
    pred = np.zeros((h, w), dtype=np.int64)
    names = ["a", "b", "c"]
    comparison = make_comparison(image, gt, pred, PALETTE, names)
    legend = draw_legend(names, PALETTE, max_width=3 * w)  # every class is present in gt
    assert comparison.size == (3 * w, h + legend.height)
    pixels = np.asarray(comparison)
    np.testing.assert_array_equal(pixels[:h, :w], image)
    np.testing.assert_array_equal(pixels[:h, w : 2 * w], overlay_mask(image, gt, PALETTE))
    np.testing.assert_array_equal(pixels[:h, 2 * w :], overlay_mask(image, pred, PALETTE))

    without_gt = make_comparison(image, None, pred, PALETTE)
    assert without_gt.size[0] == max(2 * w, draw_legend(["0"], PALETTE[:1], max_width=2 * w).width)


def test_comparison_enlarges_small_images_by_a_whole_factor():
    image = np.zeros((20, 30, 3), np.uint8)
    mask = np.zeros((20, 30), np.int64)
    mask[5:10, 5:10] = 1
    palette = [[10, 20, 30], [200, 0, 0]]
    big = make_comparison(image, mask, mask, palette, min_height=64)  # factor ceil(64 / 20) = 4
    panel = np.asarray(big)[:80, :120]
    assert panel.shape == (80, 120, 3)
    # the class-1 square of the gt panel (second panel) is enlarged to rows 20..39, cols 20..39
    gt_panel = np.asarray(big)[:80, 120:240].astype(int)
    assert (gt_panel[20:40, 20:40] == gt_panel[20, 20]).all()
    assert (gt_panel[19, 20] != gt_panel[20, 20]).any()
