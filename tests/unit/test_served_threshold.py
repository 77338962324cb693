"""The confidence threshold calibrated to a target served-node precision: the choice on hand-made
nodes, and the daemon's step serving with it (paths as precise as asked, where a fixed threshold
is not)."""

import json
import math

import torch

from connectors.memory import ListSink, RawRecord
from hle_stream.core.config import LearnerConfig
from hle_stream.metrics.served_paths import ServedPathQuality
from hle_stream.metrics.served_threshold import CANDIDATES, PrecisionTargetThreshold
from hle_stream.service.config import ProcessingConfig
from hle_stream.service.processing import MicroBatchProcessor

# Three labelled events' predicted paths: the best class's probability per level, and whether the
# label confirms each node. A node is served while the threshold is at most the smallest probability
# down to it, so the nodes are (0.9 ✓, 0.8 ✓, 0.6 ✗), (0.95 ✓, 0.4 ✗), (0.7 ✓, 0.7 ✓): 5 of 7 right.
EVENTS = [([0.9, 0.8, 0.6], [True, True, False]), ([0.95, 0.4], [True, False]), ([0.7, 0.9], [True, True])]


def _calibrated(target, events=EVENTS, **options):
    threshold = PrecisionTargetThreshold(target, fallback=0.5, min_nodes=len(events), every=1, **options)
    for probabilities, correct in events:
        threshold.record(probabilities, correct)
    return threshold


def test_the_lowest_threshold_whose_served_nodes_reach_the_target_is_chosen():
    assert _calibrated(1.0).threshold == 0.61  # at 0.60 the wrong 0.6 node is still served
    assert _calibrated(0.8).threshold == 0.41  # 5 of 6 right; at 0.40 the wrong 0.4 node makes it 5 of 7
    assert _calibrated(0.7).threshold == 0.0  # 5 of 7 = 0.71 with everything served


def test_the_fixed_threshold_stands_until_enough_nodes_are_judged_and_an_unreachable_target_serves_the_surest():
    threshold = PrecisionTargetThreshold(0.95, fallback=0.5, min_nodes=4, every=1)
    threshold.record([0.99, 0.99], [True, True])
    assert threshold.threshold == 0.5
    for _ in range(3):
        threshold.record([0.99, 0.99], [False, False])
    assert threshold.threshold == CANDIDATES[-1]


def test_a_confident_model_is_served_at_a_threshold_above_0_999():
    # 600 events of one node: 80 % right at 0.99999, 20 % wrong at 0.9992; only a threshold above
    # 0.9992 leaves the wrong ones out, and 0.9995 is the lowest candidate that does
    threshold = PrecisionTargetThreshold(0.95, fallback=0.5, min_nodes=600, every=600)
    for i in range(600):
        threshold.record([0.9992 if i % 5 == 0 else 0.99999], [i % 5 != 0])
    assert threshold.threshold == 0.9995


def test_a_non_finite_probability_is_never_served_and_the_window_forgets_the_oldest_nodes():
    threshold = PrecisionTargetThreshold(1.0, fallback=0.5, window=3, min_nodes=3, every=1)
    threshold.record([math.nan, 0.9], [True, True])
    assert list(threshold.values) == [-math.inf, -math.inf]  # the path stops at the NaN: neither node is served
    for probabilities, correct in EVENTS:
        threshold.record(probabilities, correct)
    assert list(threshold.values) == [0.4, 0.7, 0.7]
    assert threshold.threshold == 0.41


def test_the_window_survives_a_restart_and_a_new_target_applies_to_it():
    saved = _calibrated(1.0).state_dict()
    restored = PrecisionTargetThreshold(0.8, fallback=0.5, min_nodes=3)
    restored.load_state_dict(saved)
    assert restored.threshold == 0.41


DIM = 8


def _stream(count, start, seed):
    """Level 1 (``a`` or ``b``) is plain in the features; below ``a``, ``x`` and ``y`` look alike
    (a coin flip), ``b/z`` is as plain as ``b``."""
    generator = torch.Generator().manual_seed(seed)
    records = []
    for i in range(start, start + count):
        top = "ab"[int(torch.randint(2, (1,), generator=generator))]
        label = f"a/{'xy'[int(torch.randint(2, (1,), generator=generator))]}" if top == "a" else "b/z"
        x = (torch.randn(DIM, generator=generator) * 0.3 + (2.0 if top == "a" else -2.0)).tolist()
        records.append(RawRecord("t", 0, i, json.dumps({"id": f"e{i}", "x": x, "label": label}).encode()))
    return records


def _served_precision(target):
    config = ProcessingConfig(learner_config=LearnerConfig(memory_size=64, batch_size=8, device="cpu"),
                              target_precision=target)
    processor, sink = MicroBatchProcessor(config), ListSink()
    for start in range(0, 1200, 50):
        processor.process(_stream(50, start, seed=start), sink)
    processor.scoring.served_paths = ServedPathQuality()  # judge what is served from here on
    for start in range(1200, 2000, 50):
        processor.process(_stream(50, start, seed=start), sink)
    return processor


def test_with_a_target_the_served_nodes_are_as_precise_as_asked_where_the_fixed_threshold_is_not():
    calibrated, fixed = _served_precision(0.95), _served_precision(0.0)
    assert fixed.confidence_threshold == 0.5 and fixed.scoring.served_paths.precision < 0.9  # a/x vs a/y: a coin flip (expected 0.875)
    assert calibrated.confidence_threshold > 0.5
    assert calibrated.scoring.served_paths.precision >= 0.95  # measured 0.977 at threshold 0.63
    assert calibrated.scoring.served_paths.mean_depth >= 1.0  # level 1 is still served: precision by stopping early, not by nothing
    restored = MicroBatchProcessor(calibrated.config)
    restored.load_state_dict(calibrated.state_dict())
    assert restored.confidence_threshold == calibrated.confidence_threshold
