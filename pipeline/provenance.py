"""Re-export of :mod:`storage.provenance` (code version, source digests).

The stores at the bottom layer stamp ``code_version()`` on what they commit, so the
definitions live in ``storage``; this module keeps ``pipeline.provenance`` imports working.
"""

from storage.provenance import PROJECT_PACKAGES, code_version, source_digest

__all__ = ["PROJECT_PACKAGES", "code_version", "source_digest"]
