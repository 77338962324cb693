from collections import Counter

import numpy as np
import pytest

from hle_stream.eval.streams import build_stream, stratified_subsample, two_level_projection

LEAVES = np.array([f"{top}/{mid}/{top}{mid}{leaf}" for top in "ab" for mid in "xy" for leaf in "12" for _ in range(30)])


def test_multi_depth_shows_each_sample_once_one_level_per_task():
    stream = build_stream(LEAVES, "multi-depth", seed=0)
    assert sorted(stream.indices.tolist()) == list(range(len(LEAVES)))
    assert len(stream.tasks) == 3
    for level, task in enumerate(stream.tasks, start=1):
        depths = {len(p.split("/")) for p in stream.labels[task.start:task.end]}
        assert depths == {level}
    # each label is a prefix of the sample's full path
    assert all(LEAVES[i].startswith(lab) for i, lab in zip(stream.indices, stream.labels))


def test_dual_label_repeats_every_sample_with_its_fine_label():
    stream = build_stream(LEAVES, "dual-label", seed=1)
    assert len(stream) == 2 * len(LEAVES)
    first = stream.tasks[0]
    assert set(stream.labels[first.start:first.end]) == {"a", "b"}
    assert Counter(stream.indices.tolist()) == {i: 2 for i in range(len(LEAVES))}
    fine = stream.labels[first.end:]
    assert all(len(p.split("/")) == 2 for p in fine)  # projected onto top/leaf


def test_single_label_shows_each_sample_once_with_a_share_labelled_coarse():
    stream = build_stream(LEAVES, "single-label", seed=2)
    assert sorted(stream.indices.tolist()) == list(range(len(LEAVES)))
    n_tasks = len(stream.tasks)
    coarse = stream.tasks[0].end - stream.tasks[0].start
    assert coarse == sum(30 // n_tasks for _ in range(8))


def test_streams_are_reproducible_by_seed():
    a, b = build_stream(LEAVES, "single-label", 3), build_stream(LEAVES, "single-label", 3)
    c = build_stream(LEAVES, "single-label", 4)
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.indices, c.indices)


def test_projection_keeps_fine_names_unique():
    mapping = two_level_projection(np.array(["a/x/misc", "a/y/misc", "b/z/k"]))
    assert mapping == {"a/x/misc": "a/x.misc", "a/y/misc": "a/y.misc", "b/z/k": "b/k"}


def test_unknown_scenario_is_refused():
    with pytest.raises(ValueError, match="unknown scenario"):
        build_stream(LEAVES, "blurry", 0)


def test_stratified_subsample_keeps_class_shares():
    picked = stratified_subsample(LEAVES, 60, seed=0)
    assert set(Counter(LEAVES[picked].tolist()).values()) == {7, 8} or len(picked) == 64
