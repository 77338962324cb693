"""Served-path quality on a hand-made tree: animal/{dog/{terrier,poodle},cat}, plant/tree/oak."""

import math

import torch

from hle_stream.core.hierarchy import LabelTree
from hle_stream.metrics.served_paths import ServedPathQuality, recommended_threshold, threshold_curve, tree_distance


def test_tree_distance_counts_edges_through_the_deepest_common_ancestor():
    assert tree_distance("animal/dog/terrier", "animal/dog/terrier") == 0
    assert tree_distance("animal/dog/terrier", "animal/dog/poodle") == 2
    assert tree_distance("animal/dog/terrier", "animal/cat/siamese") == 4
    assert tree_distance("animal/dog/terrier", "plant/tree/oak") == 6


def test_precision_depth_and_severity_by_hand():
    quality = ServedPathQuality()
    quality.update(["animal", "animal/dog", "animal/dog/terrier"], "animal/dog/terrier")  # 3 right
    quality.update(["animal", "animal/dog", "animal/dog/poodle"], "animal/dog/terrier")  # 2 right, severity 2
    quality.update(["animal", "animal/cat"], "animal/dog/terrier")  # 1 right, severity 2
    quality.update(["plant"], "animal/dog")  # 0 right, severity 2
    quality.update([], "animal")  # nothing served: depth 0, nothing judged
    quality.update(["animal", "animal/dog"], "animal")  # the label stops above: level 2 is not judged
    assert (quality.nodes, quality.correct_nodes) == (3 + 3 + 2 + 1 + 0 + 1, 3 + 2 + 1 + 0 + 1)
    assert math.isclose(quality.precision, 7 / 10)
    assert math.isclose(quality.mean_depth, (3 + 3 + 2 + 1 + 0 + 2) / 6)
    assert quality.wrong_paths == 3 and math.isclose(quality.mistake_severity, (2 + 2 + 2) / 3)
    assert ServedPathQuality.from_state_dict(quality.state_dict()) == quality


def test_a_higher_threshold_serves_shorter_surer_paths():
    tree = LabelTree(max_depth=3)
    for path in ["animal/dog/terrier", "animal/dog/poodle", "plant/tree/oak"]:
        tree.add(path)
    index = {path: tree.path_indices(path)[-1] for path in ["animal", "plant", "animal/dog", "plant/tree",
                                                              "animal/dog/terrier", "animal/dog/poodle", "plant/tree/oak"]}
    # one sample, truly animal/dog/terrier: sure of animal (0.9), of dog (0.8), wrongly leaning poodle (0.6)
    level1 = torch.zeros(1, 2)
    level1[0, index["animal"]], level1[0, index["plant"]] = 0.9, 0.1
    level2 = torch.zeros(1, 2)
    level2[0, index["animal/dog"]], level2[0, index["plant/tree"]] = 0.8, 0.2
    level3 = torch.zeros(1, 3)
    level3[0, index["animal/dog/poodle"]], level3[0, index["animal/dog/terrier"]] = 0.6, 0.3
    level3[0, index["plant/tree/oak"]] = 0.1
    curve = threshold_curve(tree, [level1, level2, level3], ["animal/dog/terrier"], thresholds=(0.5, 0.7, 0.95))
    assert curve["0.5"] == {"precision": 2 / 3, "mean_depth": 3.0, "mistake_severity": 2.0}
    assert curve["0.7"] == {"precision": 1.0, "mean_depth": 2.0, "mistake_severity": None}
    assert curve["0.95"] == {"precision": None, "mean_depth": 0.0, "mistake_severity": None}
    assert recommended_threshold(curve) == "0.7"
