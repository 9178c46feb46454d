"""The input gate (``DCTNetLib.io.film_gate``): chest radiographs pass, noise, negatives and non-chest images are
refused with a reason, and the swap warning no longer fires on genuine pairs. Detection rates over a larger built
corpus: ``benchmarks/film_gate.py``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from DCTNetLib.conventions import hu_to_unit
from DCTNetLib.data.drr import make_drrs
from DCTNetLib.data.film_appearance import film_like
from DCTNetLib.data.phantom import chest_phantom
from DCTNetLib.io.film_gate import (CLEAR_SPINE_SIDE, MIN_REPROJECTION_RANK, consistency_reason, facing_left,
                                    lateral_orientation, mirrored_explains_better, non_chest_reason, pa_polarity,
                                    spine_side, structure)
from DCTNetLib.io.radiograph import view_pair_warnings

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def phantom():
    """A 64³ chest phantom (5 mm, the 320 mm field) in unit values and its PA and lateral DRRs (128²)."""
    hu = chest_phantom(size=64, spacing_mm=5.0, seed=4)
    unit = hu_to_unit(hu).astype(np.float32)
    drr = make_drrs(torch.from_numpy(unit)[None, None], 5.0)[0].numpy()
    return unit, drr[0], drr[1]


def test_chest_drrs_and_their_film_like_versions_pass(phantom):
    _, pa, lat = phantom
    assert non_chest_reason(pa, "pa") is None and non_chest_reason(lat, "lat") is None
    torch.manual_seed(0)
    for _ in range(5):
        looks = [film_like(torch.from_numpy(image)[None])[0].numpy() for image in (pa, lat)]
        assert non_chest_reason(looks[0], "pa") is None and non_chest_reason(looks[1], "lat") is None


def test_noise_is_refused_in_either_view():
    rng = np.random.default_rng(0)
    noise = rng.random((128, 128)).astype(np.float32)
    assert structure(noise) < 0.1
    for view in ("pa", "lat"):
        assert "no large-scale structure" in non_chest_reason(noise, view)


def test_an_inverted_pa_is_refused_and_the_polarity_flips(phantom):
    _, pa, _ = phantom
    assert pa_polarity(pa) > 0 > pa_polarity(1.0 - pa)
    assert "inverted" in non_chest_reason(1.0 - pa, "pa")


def test_an_axial_ct_slice_given_as_pa_is_refused(phantom):
    unit, _, _ = phantom
    sliced = np.clip((unit[unit.shape[0] // 2] - 0.2) / 0.3, 0, 1).astype(np.float32)
    from DCTNetLib.io.radiograph import resize_radiograph

    assert non_chest_reason(resize_radiograph(sliced), "pa") is not None


def test_real_films_pass(shared_data):
    from DCTNetLib.io.film import read_film
    from DCTNetLib.io.radiograph import resize_radiograph

    films = sorted((shared_data / "radiographs").glob("*_*"))
    assert films
    for path in films:
        view = "lat" if path.name.startswith("lat_") else "pa"
        image = resize_radiograph(read_film(path, view)[0])
        assert non_chest_reason(image, view) is None, path.name
        assert non_chest_reason(1.0 - image, view) is not None or view == "lat", path.name


def test_consistency_needs_both_views_above_their_minimum():
    good = {"pa_rank": 0.9, "lat_rank": 0.9}
    assert consistency_reason(good) is None
    assert "PA image" in consistency_reason({**good, "pa_rank": MIN_REPROJECTION_RANK["pa"] - 0.01})
    assert "lateral image" in consistency_reason({**good, "lat_rank": float("nan")})
    assert consistency_reason({}) is None  # no re-projection (a model without the training detector)


def test_swap_warning_fires_on_swapped_real_pairs_only(phantom, shared_data):
    _, pa, lat = phantom
    assert view_pair_warnings(pa, lat) == []
    from DCTNetLib.io.film import read_film

    folder = shared_data / "radiographs"
    for stem in ("radiopaedia_pcp2", "radiopaedia_covid7"):
        pa_file, lat_file = (next(folder.glob(f"{view}_{stem}.*")) for view in ("pa", "lat"))
        real_pa, real_lat = read_film(pa_file, "pa")[0], read_film(lat_file, "lat")[0]
        assert view_pair_warnings(real_pa, real_lat) == [], stem
        assert "swapped" in view_pair_warnings(real_lat, real_pa)[0], stem


def test_lateral_orientation_is_decided_by_the_image_only_when_the_spine_side_is_clear(phantom, shared_data):
    """Real laterals shown facing right are "right" and their mirror images "left"; the phantom's lateral, whose
    spine barely stands out (contrast +0.04), is "unclear" either way and the image rule keeps it as given."""
    from DCTNetLib.io.film import read_film
    from DCTNetLib.io.radiograph import resize_radiograph

    for stem in ("lat_radiopaedia_pcp2.png", "lat_radiopaedia_covid7.jpg"):
        lat = resize_radiograph(read_film(shared_data / "radiographs" / stem, "lat")[0])
        assert spine_side(lat) <= -CLEAR_SPINE_SIDE
        assert lateral_orientation(lat) == "right" and lateral_orientation(lat[:, ::-1]) == "left"
        turned, flipped = facing_left(lat)
        assert flipped and np.array_equal(turned, lat[:, ::-1])
    _, _, lat = phantom
    assert abs(spine_side(lat)) < CLEAR_SPINE_SIDE
    assert lateral_orientation(lat) == lateral_orientation(lat[:, ::-1]) == "unclear"
    assert facing_left(lat) == (lat, False)


def test_the_mirrored_lateral_wins_only_when_it_is_explained_better():
    assert mirrored_explains_better({"lat_ncc": 0.90}, {"lat_ncc": 0.93})
    assert not mirrored_explains_better({"lat_ncc": 0.93}, {"lat_ncc": 0.90})
    assert not mirrored_explains_better({"lat_ncc": 0.93}, {"lat_ncc": 0.93})  # a tie keeps the film as given
