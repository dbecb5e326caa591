"""Latitude and longitude become British National Grid references with a stated accuracy, never a silent fallback."""

from __future__ import annotations

import warnings

from adapters.common.grid import conversion, grid_reference
from broker.model.case import Location


def test_the_conversion_says_which_transformation_it_uses_and_how_accurate_it_is() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PROJ's "best transformation is not available" must not escape
        chosen = conversion()
        easting, northing = grid_reference(Location(lat=51.50073, lon=-0.12463)) or (0.0, 0.0)
    assert "British National Grid" in chosen.description
    assert 0 < chosen.accuracy <= 2.0
    # Big Ben by Ordnance Survey: about 530269 E, 179640 N; within the transformation's stated accuracy and more.
    assert abs(easting - 530269) < 5 and abs(northing - 179640) < 5
