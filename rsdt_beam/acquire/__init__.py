"""Stage 1: observations on one grid, from rsdtlib EOPatch folders, GeoTIFF archives (convert) or Sentinel Hub
(fetch), into the observation store."""
