"""The framing edits and body measures of :mod:`DCTNetLib.evaluation.framing` on synthetic films and volumes."""

from __future__ import annotations

import numpy as np
import pytest

from DCTNetLib.evaluation.framing import (BODY_HU, body_extent, bone_stats, cropped, framing_edits, narrowed,
                                          padded)


def test_edits_shrink_the_anatomy_inside_a_black_canvas():
    film = np.ones((100, 80), np.float32)
    squeezed = narrowed(film, 0.7)
    assert squeezed.shape == film.shape
    assert np.flatnonzero(squeezed.mean(axis=0) > 0.5).size == 56  # 70 % of the columns, every row
    assert squeezed[:, :12].max() == 0 and squeezed[:, -12:].max() == 0
    small = padded(film, 0.7)
    assert small.shape == film.shape and small.sum() == pytest.approx(70 * 56)
    rows, cols = cropped(film, 0.8).shape
    assert abs(rows - 80) <= 2 and abs(cols - 64) <= 2  # the middle 80 %, to a pixel each side
    assert set(framing_edits(film, film)) == {"original", "pa_narrowed_70", "both_padded_70", "both_cropped_80"}


def test_body_extent_and_bone_stats_measure_a_box_body_with_a_spine():
    hu = np.full((64, 64, 64), -1000.0, np.float32)
    hu[8:56, 16:48, 10:50] = 40.0  # body: 48 slices tall, 40 voxels wide (R–L, the last axis)
    hu[8:56, 36:44, 30:34] = 700.0  # a spine: back half (A–P ≥ 32), middle columns
    extent = body_extent(hu)
    assert (extent["width_voxels"], extent["height_voxels"]) == (40.0, 48.0)
    assert extent["body_fraction"] == pytest.approx(float((hu > BODY_HU).mean()))
    bone = bone_stats(hu)
    assert bone["bone_fraction"] == pytest.approx(48 * 8 * 4 / 64**3)
    assert bone["spine_column_bone_fraction"] == pytest.approx(48 * 8 * 4 / (64 * 32 * 8))
    assert bone["p999_hu"] == pytest.approx(700.0)


def test_every_edit_keeps_the_orientation_of_the_unedited_lateral(shared_data):
    """The real laterals face right; padded, they fall below the image rule's contrast. framing_inputs turns every
    edit's lateral as the unedited one is turned, so none reaches the model mirrored."""
    from DCTNetLib.evaluation.framing import framing_inputs, padded
    from DCTNetLib.io.film import read_film
    from DCTNetLib.io.film_gate import lateral_orientation
    from DCTNetLib.io.radiograph import pad_to_square, resize_radiograph

    folder = shared_data / "radiographs"
    pa, lat = (read_film(folder / f"{view}_radiopaedia_covid7.jpg", view)[0] for view in ("pa", "lat"))
    inputs = framing_inputs(pa, lat)
    assert lateral_orientation(resize_radiograph(pad_to_square(lat))) == "right"
    flipped = resize_radiograph(pad_to_square(lat))[:, ::-1]
    assert np.corrcoef(inputs["original"][1].ravel(), flipped.ravel())[0, 1] > 0.999
    as_filmed = resize_radiograph(pad_to_square(padded(lat)))  # the padded lateral, facing right as filmed
    assert lateral_orientation(as_filmed) == "unclear"  # alone, the image rule would keep it facing right
    padded_lat = inputs["both_padded_70"][1]
    assert np.corrcoef(padded_lat.ravel(), as_filmed[:, ::-1].ravel())[0, 1] > 0.999
    assert all(lateral_orientation(q) != "right" for _, q in inputs.values())
