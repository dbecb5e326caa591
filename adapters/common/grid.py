"""British National Grid references (EPSG:27700), which UK council systems hold locations in."""

from __future__ import annotations

from functools import cache

from pyproj import Transformer

from broker.sdk import Location


@cache
def _to_british_national_grid() -> Transformer:
    return Transformer.from_crs("EPSG:4326", "EPSG:27700", always_xy=True)


def grid_reference(location: Location) -> tuple[float, float] | None:
    """Easting and northing as given, or converted from latitude/longitude; None if the case has neither."""
    if location.easting is not None and location.northing is not None:
        return location.easting, location.northing
    if location.lat is not None and location.lon is not None:
        easting, northing = _to_british_national_grid().transform(location.lon, location.lat)
        return float(easting), float(northing)
    return None
