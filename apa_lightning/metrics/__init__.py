"""Metrics computed from results, with their tables and figures: per-class classification metrics as sklearn's
report lays them out (``classification``) and the wrong pixels of binary images (``wrong_pixels``)."""
