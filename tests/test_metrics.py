"""Evaluator: hand-computed recalls and mIoU, multi-window ground truth, id checks, JSONL I/O."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.metrics import (
    MAP_KEYS,
    METRIC_KEYS,
    PredictionRecord,
    average_precision,
    evaluate_predictions,
    format_metrics,
    mean_average_precision,
    read_predictions,
    write_moment_detr_predictions,
    write_predictions,
)
from pipeline.datasets.records import QueryMoment


def _gt(qid: str, start: float, end: float, vid: str = "v1", **extra: object) -> QueryMoment:
    return QueryMoment(qid, vid, f"sentence {qid}", start, end, 20.0, "test", extra=dict(extra))


GT = [_gt("a", 0.0, 10.0), _gt("b", 10.0, 14.0), _gt("c", 2.0, 4.0), _gt("d", 5.0, 15.0)]


def _pred(qid: str, spans: list[list[float]], scores: list[float] | None = None, vid: str = "v1") -> dict:
    return {"query_id": qid, "video_id": vid, "spans": spans, "scores": scores or []}


def test_hand_computed_metrics() -> None:
    preds = [
        # a: top-1 [0, 8] -> IoU 0.8
        _pred("a", [[0, 8], [0, 10]], [0.9, 0.5]),
        # b: top-1 [11, 15] -> 3/5 = 0.6; the second candidate is exact but NMS drops it (IoU 0.6 >= 0.5)
        _pred("b", [[11, 15], [10, 14]], [0.8, 0.7]),
        # c: top-1 [5, 6] -> 0; candidates 2..5 after NMS: [3, 4] -> 0.5 within top-5
        _pred("c", [[5, 6], [3, 4], [8, 9], [10, 11], [12, 13], [2, 4]], [6, 5, 4, 3, 2, 1]),
        # d: scores put [5, 11] (IoU 0.6) above [0, 20] (IoU 0.5)
        _pred("d", [[0, 20], [5, 11]], [0.1, 0.2]),
    ]
    m = evaluate_predictions(preds, GT)
    assert set(m) == set(METRIC_KEYS) | set(MAP_KEYS) | {"num_queries"}
    assert m["num_queries"] == 4
    assert m["R1@0.3"] == pytest.approx(75.0)  # a, b, d
    assert m["R1@0.5"] == pytest.approx(75.0)
    assert m["R1@0.7"] == pytest.approx(25.0)  # a
    assert m["R5@0.3"] == pytest.approx(100.0)  # c via [3, 4]; [2, 4] is 6th -> not in top-5
    assert m["R5@0.5"] == pytest.approx(100.0)
    assert m["R5@0.7"] == pytest.approx(25.0)  # b's exact span was suppressed by NMS
    assert m["mIoU"] == pytest.approx(100 * (0.8 + 0.6 + 0.0 + 0.6) / 4)
    # without NMS b's exact second candidate counts for R5@0.7, and c's [2,4] is still 6th
    m2 = evaluate_predictions(preds, GT, nms_iou=None)
    assert m2["R5@0.7"] == pytest.approx(50.0)
    assert m2["R1@0.5"] == m["R1@0.5"]


def test_no_scores_means_given_order_and_fewer_than_k_candidates() -> None:
    preds = [_pred(g.query_id, [[g.start, g.end]]) for g in GT]
    m = evaluate_predictions(preds, GT)
    assert all(m[k] == pytest.approx(100.0) for k in METRIC_KEYS)


def test_multi_window_ground_truth_uses_best_window() -> None:
    gt = [_gt("m", 0.0, 2.0, windows=[[0.0, 2.0], [10.0, 14.0]])]
    m = evaluate_predictions([_pred("m", [[11.0, 14.0]])], gt)  # IoU 0 with the first window, 0.75 with the second
    assert m["R1@0.7"] == pytest.approx(100.0)
    assert m["mIoU"] == pytest.approx(75.0)


def test_mismatched_ids_are_refused_and_listed() -> None:
    preds = [_pred("a", [[0, 1]]), _pred("b", [[0, 1]]), _pred("zz", [[0, 1]])]
    with pytest.raises(ValueError) as err:
        evaluate_predictions(preds, GT)
    msg = str(err.value)
    assert "'c'" in msg and "'d'" in msg and "missing" in msg and "'zz'" in msg
    with pytest.raises(ValueError, match="more than one record"):
        evaluate_predictions([_pred(g.query_id, [[0, 1]]) for g in GT] + [_pred("a", [[0, 1]])], GT)
    with pytest.raises(ValueError, match="different video"):
        evaluate_predictions([_pred(g.query_id, [[0, 1]], vid="other") for g in GT], GT)


def test_bad_records_are_rejected() -> None:
    with pytest.raises(ValueError, match="end >= start"):
        PredictionRecord("q", "v", ((3.0, 1.0),))
    with pytest.raises(ValueError, match="2 spans but 1 scores"):
        PredictionRecord("q", "v", ((0.0, 1.0), (1.0, 2.0)), (0.5,))
    with pytest.raises(ValueError, match="no spans"):
        PredictionRecord("q", "v", ())


def test_jsonl_round_trip_and_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "pred.jsonl"
    recs = [PredictionRecord("a", "v1", ((0.0, 1.5), (2.0, 3.0)), (0.9, 0.1))]
    assert write_predictions(path, recs) == 1
    assert read_predictions(path) == recs
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temporary file
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(recs[0].to_dict()) + "\n\n" + '{"query_id": "b", "video_id": "v"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:3"):
        read_predictions(bad)
    with pytest.raises(FileNotFoundError):
        read_predictions(tmp_path / "nope.jsonl")


def test_format_metrics_table() -> None:
    m = evaluate_predictions([_pred(g.query_id, [[g.start, g.end]]) for g in GT], GT)
    header, values = format_metrics(m).splitlines()
    assert header.split()[0] == "R1@0.3" and header.split()[-1] == "num_queries"
    # `mktn evaluate` prints this table: mAP at IoU 0.5, 0.75 and averaged, after mIoU
    assert header.split()[6:10] == ["mIoU", "mAP@0.5", "mAP@0.75", "mAP"]
    assert values.split()[-1] == "4"


def test_real_jsonl_annotations_with_half_overlapping_predictions(shared_data: Path) -> None:
    """On the real Lighthouse Charades test file: predicting [s, 2e - s] for every [s, e]
    has IoU exactly 0.5 with it, so R@0.3 = R@0.5 = 100, R@0.7 = 0 and mIoU = 50."""
    from pipeline.datasets import load_annotations

    gt = load_annotations("jsonl", shared_data / "jsonl" / "charades_test_release.jsonl").records
    assert len(gt) > 3000
    preds = [
        {"query_id": g.query_id, "video_id": g.video_id, "spans": [[g.start, 2 * g.end - g.start]]}
        for g in gt
    ]
    m = evaluate_predictions(preds, gt)
    assert m["num_queries"] == len(gt)
    assert m["R1@0.3"] == 100.0 and m["R1@0.5"] == 100.0 and m["R1@0.7"] == 0.0
    assert m["mIoU"] == pytest.approx(50.0)


# ---------------------------------------------------------------- mAP (moment_detr standalone_eval)


def test_map_hand_computed_single_window() -> None:
    """gt [0, 10]; ranked [0, 8] (IoU 0.8) then [0, 10] (IoU 1).
    IoU 0.5..0.8 (7 thresholds): the first window hits -> AP 1. 0.85..0.95 (3): it misses and
    the second hits -> precision [0, 1/2] at recall [0, 1] -> AP 1/2. Mean (7 + 1.5) / 10 = 0.85."""
    gt = [_gt("a", 0.0, 10.0)]
    m = mean_average_precision([_pred("a", [[0, 10], [0, 8]], [0.5, 0.9])], gt)  # scores rank [0, 8] first
    assert m == pytest.approx({"mAP@0.5": 100.0, "mAP@0.75": 100.0, "mAP": 85.0})


def test_map_hand_computed_multi_window_and_taken_windows() -> None:
    """gt windows [0, 4], [10, 14]; ranked [10, 14] (IoU 1 with the second), [0, 2] (0.5 with the
    first), [11, 14] (0.75 with the second, already taken -> next best 0 -> false positive).
    IoU 0.5: TP TP FP -> precision 1, 1, 2/3 at recall 1/2, 1, 1 -> AP 1.
    IoU 0.55..0.95: TP FP FP -> recall stays 1/2 with precision 1 -> AP 1/2. Mean (1 + 9/2) / 10."""
    gt = _gt("m", 0.0, 4.0, windows=[[0.0, 4.0], [10.0, 14.0]])
    spans = np.array([[10.0, 14.0], [0.0, 2.0], [11.0, 14.0]])
    ap = average_precision(spans, np.array([3.0, 2.0, 1.0]), np.array([[0.0, 4.0], [10.0, 14.0]]))
    assert ap.tolist() == pytest.approx([1.0] + [0.5] * 9)
    m = mean_average_precision([_pred("m", spans.tolist(), [3, 2, 1])], [gt])
    assert m == pytest.approx({"mAP@0.5": 100.0, "mAP@0.75": 50.0, "mAP": 55.0})
    # the two queries together: the mean over queries
    both = [_gt("a", 0.0, 10.0), gt]
    preds = [_pred("a", [[0, 8], [0, 10]], [0.9, 0.5]), _pred("m", spans.tolist(), [3, 2, 1])]
    m2 = evaluate_predictions(preds, both)
    assert (m2["mAP@0.5"], m2["mAP@0.75"], m2["mAP"]) == pytest.approx((100.0, 75.0, 70.0))


def test_map_reads_the_first_ten_windows_as_given_then_ranks_by_score() -> None:
    """standalone_eval keeps pred_relevant_windows[:10] in file order before sorting by score:
    an exact window given 11th counts for nothing, however high its score."""
    gt = [_gt("a", 0.0, 10.0)]
    wrong = [[20.0 + i, 21.0 + i] for i in range(10)]
    m = mean_average_precision([_pred("a", [*wrong, [0, 10]], [0.1] * 10 + [0.99])], gt)
    assert m == {"mAP@0.5": 0.0, "mAP@0.75": 0.0, "mAP": 0.0}
    m = mean_average_precision([_pred("a", [*wrong[:9], [0, 10]], [0.1] * 9 + [0.99])], gt)
    assert m["mAP"] == pytest.approx(100.0)
    # no scores: the given order is the ranking; the exact window 2nd -> precision 1/2 at recall 1
    m = mean_average_precision([_pred("a", [[30, 31], [0, 10]])], gt)
    assert m["mAP"] == pytest.approx(50.0)


def test_moment_detr_prediction_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    recs = [PredictionRecord("7803", "RoripwjYFp8_360.0_510.0", ((10.0, 20.0), (0.0, 4.0)), (0.9, 0.2)),
            PredictionRecord("q-2", "vid2", ((1.0, 2.0),), (0.5,))]
    path = tmp_path / "submission.jsonl"
    assert write_moment_detr_predictions(path, recs, {"7803": "Man in gray top walks."}) == 2
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {"qid": 7803, "query": "Man in gray top walks.", "vid": "RoripwjYFp8_360.0_510.0",
                        "pred_relevant_windows": [[10.0, 20.0, 0.9], [0.0, 4.0, 0.2]]}
    assert lines[1]["qid"] == "q-2"
    assert read_predictions(path) == recs
    # evaluate-predictions reads it against Lighthouse-style ground truth
    gt = tmp_path / "gt_test.jsonl"
    gt.write_text("\n".join(json.dumps(d) for d in [
        {"qid": 7803, "query": "Man in gray top walks.", "vid": "RoripwjYFp8_360.0_510.0", "duration": 150,
         "relevant_windows": [[10, 20]]},
        {"qid": "q-2", "query": "b", "vid": "vid2", "duration": 30, "relevant_windows": [[1, 3]]},
    ]) + "\n")
    assert main(["evaluate-predictions", "--annotations", str(gt), "--predictions", str(path), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    # 7803 exact at rank 1 -> AP 1 everywhere; q-2 IoU 0.5 -> AP 1 at 0.5 only
    assert (m["mAP@0.5"], m["mAP@0.75"], m["mAP"]) == pytest.approx((100.0, 50.0, 55.0))
    assert m["R1@0.5"] == 100.0 and m["R1@0.7"] == 50.0
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"qid": 1, "vid": "v", "pred_relevant_windows": [[0, 1, 0.5], [0, 2]]}) + "\n")
    assert main(["evaluate-predictions", "--annotations", str(gt), "--predictions", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:1" in err and "mixes" in err
