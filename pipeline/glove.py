"""Deprecated name of :mod:`pipeline.word_vectors` (it read as "GloVe only", but the module
also trains the word2vec default). ``import pipeline.glove`` returns that module itself, so
old imports, attribute access and monkeypatching keep working."""

from __future__ import annotations

import sys

from pipeline import word_vectors as _word_vectors

sys.modules[__name__] = _word_vectors
