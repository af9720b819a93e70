"""The ``street`` synthetic domain: a top-down street scene with small vehicles, pedestrians and dogs.

``script.py`` draws the layout, actors and timed events; ``render.py`` paints
160x120 frames (lighting gradient, sensor noise, camera shake); ``language.py``
writes the queries in this domain's own nouns, verbs and connectives.
"""
