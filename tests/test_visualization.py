"""Palettes, colourised masks, overlays and the validation comparison image."""

import numpy as np
import pytest

from segaccel.visualization import (
    TITLE_HEIGHT,
    class_boundaries,
    class_shares,
    colorize_mask,
    draw_legend,
    error_overlay,
    get_palette,
    legend_of,
    make_comparison,
    overlay_mask,
    overlay_with_legend,
    readable_overlay,
)

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


def test_readable_overlay_by_hand():
    image = np.array([[[100, 50, 250], [7, 8, 9], [200, 200, 200]]], dtype=np.uint8)
    mask = np.array([[1, 1, 255]])
    # (100, 50, 250): luma 87.75; desaturated 0.3 * rgb + 0.7 * 87.75 = (91.425, 76.425, 136.425);
    # half with (200, 100, 0): (145.71, 88.21, 68.21). (7, 8, 9): luma 7.815 -> (103.79, 53.94, 4.09).
    # The ignored grey pixel stays grey (its luma is itself).
    out = readable_overlay(image, mask, PALETTE, alpha=0.5, outline=None)
    assert out.tolist() == [[[146, 88, 68], [104, 54, 4], [200, 200, 200]]]
    outlined = readable_overlay(image, mask, PALETTE, alpha=0.5)
    assert outlined.tolist() == [[[146, 88, 68], [255, 255, 255], [255, 255, 255]]]  # 1 | 255 boundary


def test_class_boundaries_and_shares_by_hand():
    mask = np.array([[0, 0, 1], [0, 0, 1], [2, 2, 2], [2, 2, 2]])
    edges = class_boundaries(mask)
    assert edges.astype(int).tolist() == [[0, 1, 1], [1, 1, 1], [1, 1, 1], [0, 0, 0]]
    assert class_shares(mask, 3) == {0: 100 * 4 / 12, 1: 100 * 2 / 12, 2: 100 * 6 / 12}
    assert class_shares(np.array([[0, 255], [7, 1]]), 3) == {0: 25.0, 1: 25.0}  # 255 and 7 not classes


def test_error_overlay_marks_wrong_labelled_pixels():
    image = np.full((2, 3, 3), 90, np.uint8)
    gt = np.array([[0, 1, 255], [2, 2, 1]])
    pred = np.array([[0, 2, 1], [2, 0, 1]])
    out, share = error_overlay(image, gt, pred)
    wrong = np.array([[0, 1, 0], [0, 1, 0]], bool)  # 255 is never wrong
    assert share == pytest.approx(100 * 2 / 5)
    assert (out[wrong] == [255, 0, 0]).all() and (out[~wrong] == 90).all()


def test_comparison_is_four_titled_panels_over_a_legend():
    h, w = 24, 40  # non-square
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    gt = rng.integers(0, 3, (h, w))
    pred = np.zeros((h, w), dtype=np.int64)
    names = ["a", "b", "c"]
    comparison = make_comparison(image, gt, pred, PALETTE, names)
    legend = legend_of([("ground truth", gt), ("prediction", pred)], PALETTE, names, 4 * w)
    assert comparison.size == (max(4 * w, legend.width), TITLE_HEIGHT + h + legend.height)
    pixels = np.asarray(comparison)
    body = pixels[TITLE_HEIGHT : TITLE_HEIGHT + h]
    np.testing.assert_array_equal(body[:, :w], image)
    np.testing.assert_array_equal(body[:, w : 2 * w], readable_overlay(image, gt, PALETTE))
    np.testing.assert_array_equal(body[:, 2 * w : 3 * w], readable_overlay(image, pred, PALETTE))
    np.testing.assert_array_equal(body[:, 3 * w : 4 * w], error_overlay(image, gt, pred)[0])
    titles = pixels[:TITLE_HEIGHT]
    for k in range(4):  # each panel has its title: dark text on the white strip
        assert (titles[:, k * w : (k + 1) * w] < 100).all(axis=2).any()
    np.testing.assert_array_equal(pixels[TITLE_HEIGHT + h :, : legend.width], np.asarray(legend))

    without_gt = make_comparison(image, None, pred, PALETTE)
    assert without_gt.size[0] == max(2 * w, draw_legend(["0"], PALETTE[:1], max_width=2 * w).width)


def test_comparison_enlarges_small_images_by_a_whole_factor():
    image = np.zeros((20, 30, 3), np.uint8)
    mask = np.zeros((20, 30), np.int64)
    mask[5:10, 5:10] = 1
    palette = [[10, 20, 30], [200, 0, 0]]
    big = make_comparison(image, mask, mask, palette, min_height=64)  # factor ceil(64 / 20) = 4
    pixels = np.asarray(big)
    assert pixels.shape[1] == 4 * 120  # image, ground truth, prediction, errors: 30 * 4 wide each
    # the class-1 square of the gt panel (second) is enlarged to rows/cols 20..39; its boundary (rows 19
    # and 20 on both sides of the edge) outlined in white, its inside one colour, outside another
    gt_panel = pixels[TITLE_HEIGHT : TITLE_HEIGHT + 80, 120:240].astype(int)
    inside = gt_panel[21, 21]
    assert (gt_panel[21:39, 21:39] == inside).all()
    assert (gt_panel[19:21, 21:39] == 255).all() and (gt_panel[39:41, 21:39] == 255).all()
    assert (gt_panel[17, 21:39] != inside).any(axis=1).all()


def test_overlay_with_legend_is_the_readable_overlay_over_the_classes_present():
    image = np.full((10, 14, 3), 120, np.uint8)
    mask = np.zeros((10, 14), np.int64)
    mask[:, 7:] = 2  # classes 0 and 2 present, half each; class 1 absent
    picture = overlay_with_legend(image, mask, PALETTE, ["sky", "road", "tree"])
    pixels = np.asarray(picture)
    np.testing.assert_array_equal(pixels[:10, :14], readable_overlay(image, mask, PALETTE))
    legend = legend_of([("", mask)], PALETTE, ["sky", "road", "tree"], 14)
    np.testing.assert_array_equal(pixels[10:, : legend.width], np.asarray(legend))
    two = draw_legend(["sky", "tree"], [PALETTE[0], PALETTE[2]], 14, ["50.0 %", "50.0 %"])
    np.testing.assert_array_equal(np.asarray(legend), np.asarray(two))
