import pytest

from hle_stream.core.hierarchy import LabelPathError, LabelTree


def test_classes_are_numbered_per_level_by_first_appearance():
    tree = LabelTree()
    tree.add("animal/dog")
    tree.add("plant")
    tree.add("animal/cat/lion")
    assert tree.classes(1) == ["animal", "plant"]
    assert tree.classes(2) == ["animal/dog", "animal/cat"]
    assert tree.path_indices("animal/cat/lion") == [0, 1, 0]
    assert tree.depth == 3


def test_a_new_class_may_appear_at_any_level_at_any_time():
    tree = LabelTree()
    created = tree.add("a/b/c")
    assert [(c.level, c.index) for c in created] == [(1, 0), (2, 0), (3, 0)]
    assert [c.path for c in tree.add("a/x")] == ["a/x"]
    assert tree.add("a/b/c") == []


def test_global_ids_follow_first_appearance_over_all_levels():
    tree = LabelTree()
    tree.add("a/b")
    tree.add("c")
    assert [tree.global_id(p) for p in ("a", "a/b", "c")] == [0, 1, 2]


@pytest.mark.parametrize("path, reason", [
    ("", "empty_path"), ("   ", "empty_path"), ("a//b", "empty_segment"), ("a/b/", "empty_segment"),
    ("/a", "empty_segment"), ("a/b/c/d", "too_deep"),
])
def test_malformed_paths_are_rejected_with_a_reason(path, reason):
    tree = LabelTree(max_depth=3)
    with pytest.raises(LabelPathError) as err:
        tree.add(path)
    assert err.value.reason == reason
    assert tree.total_classes == 0


def test_class_cap_rejects_a_path_without_registering_any_part_of_it():
    tree = LabelTree(max_classes=3)
    tree.add("a/b")
    with pytest.raises(LabelPathError) as err:
        tree.add("c/d")
    assert err.value.reason == "class_cap"
    assert "c" not in tree and tree.total_classes == 2
    tree.add("c")  # exactly at the cap is fine
    assert tree.total_classes == 3


def test_ancestor_and_parent_tables():
    tree = LabelTree()
    for p in ("x/1/a", "y/2/b", "x/3/c"):
        tree.add(p)
    assert tree.ancestor_table(3, 1) == [0, 1, 0]
    assert tree.parent_index(3, 2) == tree.locate("x/3")[1]


def test_state_round_trip_keeps_numbering():
    tree = LabelTree(max_depth=4, max_classes=50)
    for p in ("b/y", "a", "b/x/q"):
        tree.add(p)
    copy = LabelTree.from_state_dict(tree.state_dict())
    assert copy.state_dict() == tree.state_dict()
    assert copy.locate("b/x/q") == tree.locate("b/x/q")


def test_check_all_counts_the_classes_earlier_paths_of_the_batch_would_add():
    tree = LabelTree(max_depth=3, max_classes=4)
    tree.add("a/x")
    tree.check_all(["a/y", "a/y", "a/x"])  # one new class: 3 of 4
    with pytest.raises(LabelPathError) as err:
        tree.check_all(["b", "a/z", "c"])  # b makes 3, a/z 4, c would make 5
    assert err.value.reason == "class_cap" and tree.total_classes == 2


def test_a_learner_rejects_a_batch_that_would_pass_the_cap_before_learning_any_of_it(small_config):
    import torch

    from hle_stream.core.learner import HierarchicalLearner

    learner = HierarchicalLearner(small_config.with_(max_classes=3), (4,), torch.float32)
    with pytest.raises(LabelPathError):
        learner.observe(torch.zeros(3, 4), ["a/x", "a/y", "b"])
    assert learner.seen == 0 and learner.tree.total_classes == 0


def test_over_cap_admits_a_batch_in_order_and_turns_away_only_what_does_not_fit():
    tree = LabelTree(max_depth=3, max_classes=4)
    tree.add("a/x")
    assert tree.over_cap(["b", "a/y", "c", "a/x", "b"]) == [2]  # b makes 3, a/y 4, c would be 5
