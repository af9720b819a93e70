"""Prefect flows that compose the pipeline, model and storage functions."""
