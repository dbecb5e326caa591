"""British National Grid references (EPSG:27700), which UK council systems hold locations in.

Latitude and longitude are converted with the most accurate transformation PROJ has: Ordnance Survey's OSTN15 grid
(about 0.1 m) where its file, ``uk_os_OSTN15_NTv2_OSGBtoETRS.tif``, is in PROJ's data folders (or in the folder
``CASEBRIDGE_PROJ_GRIDS_DIR`` names), else a seven-parameter Helmert transformation, accurate to about 2 m — enough
to find a pothole, said once in the log rather than warned about on every case.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from functools import cache

import structlog
from pyproj import Transformer, datadir
from pyproj.transformer import TransformerGroup

from broker.sdk import Location

log = structlog.get_logger("casebridge.grid")

#: Where an operator may put OSTN15's grid file, if PROJ's own data folders do not hold it.
GRIDS_DIR_ENV = "CASEBRIDGE_PROJ_GRIDS_DIR"


@dataclass(frozen=True)
class Conversion:
    transformer: Transformer
    description: str
    #: Metres, as PROJ states it (-1 where unknown).
    accuracy: float


@cache
def conversion() -> Conversion:
    """The WGS84 -> British National Grid transformation in use, and its accuracy."""
    extra = os.environ.get(GRIDS_DIR_ENV)
    if extra:
        datadir.append_data_dir(extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "best transformation is not available": said below, once, with figures
        group = TransformerGroup("EPSG:4326", "EPSG:27700", always_xy=True)
    best = group.transformers[0]
    chosen = Conversion(best, best.description, float(best.accuracy))
    log.info("grid.transformation", transformation=chosen.description, accuracy_metres=chosen.accuracy,
             ostn15=group.best_available,
             **({} if group.best_available else {
                 "note": f"put uk_os_OSTN15_NTv2_OSGBtoETRS.tif in {GRIDS_DIR_ENV} for about 0.1 m"}))
    return chosen


def grid_reference(location: Location) -> tuple[float, float] | None:
    """Easting and northing as given, or converted from latitude/longitude; None if the case has neither."""
    if location.easting is not None and location.northing is not None:
        return location.easting, location.northing
    if location.lat is not None and location.lon is not None:
        easting, northing = conversion().transformer.transform(location.lon, location.lat)
        return float(easting), float(northing)
    return None
