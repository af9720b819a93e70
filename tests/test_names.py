"""Names that said two things were renamed (issue 15, item 8); the old names still work."""

from __future__ import annotations


def test_deprecated_names_are_the_new_objects() -> None:
    import model.loader
    import pipeline.extract
    import pipeline.glove
    import pipeline.skipthought
    import pipeline.word_vectors
    from storage.features import FeatureStore
    from storage.queries import QueryStore

    assert pipeline.glove is pipeline.word_vectors  # the module trains word2vec too
    from pipeline.glove import WordVectorsConfig

    assert WordVectorsConfig is pipeline.word_vectors.WordVectorsConfig
    assert FeatureStore.extractor is FeatureStore.group  # returns a FeatureGroup
    assert QueryStore.encoder is QueryStore.group  # returns a QueryGroup
    assert pipeline.extract.list_videos is pipeline.extract.find_videos  # files, not committed ids
    assert pipeline.extract.plan_videos is pipeline.extract.assign_video_ids
    assert pipeline.skipthought.load_checkpoint is pipeline.skipthought.load_skipthought_checkpoint
    assert model.loader.load_records is model.loader.load_records_from_specs


def test_store_group_accessors(tmp_path) -> None:
    import numpy as np

    from storage.features import FeatureStore
    from storage.queries import QueryStore

    fs = FeatureStore(tmp_path / "f.zarr")
    g = fs.group("ds", "ex", attrs={"backbone": "x"})
    g.write_video("v", np.zeros((2, 3)), np.zeros((2, 1, 3)), np.array([[0.0, 1.0], [1.0, 2.0]]), {})
    assert fs.extractor("ds", "ex", create=False).list_videos() == ["v"]
    qs = QueryStore(tmp_path / "q.zarr")
    assert qs.group("ds", "enc").key == qs.encoder("ds", "enc").key
