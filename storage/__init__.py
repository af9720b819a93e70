"""Zarr feature and query stores, content fingerprints, atomic writes."""
