"""Scale-out through the real parts: the broker ``--broker`` chooses, the model store in a loopback
S3 (moto) or a shared directory, trainers and predictor replicas run as ``hle-stream run --role
trainer`` and ``hle-stream serve``."""

import pytest

from tests.support.fleet import failover_run, fencing_run, rollback_run


@pytest.mark.parametrize("store", ["s3", "directory"])
def test_a_standby_takes_over_from_a_killed_trainer_and_replicas_predict_every_event(start_broker, broker_kind,
                                                                                      tmp_path, store):
    with start_broker(tmp_path / "broker.log") as broker:
        result = failover_run(broker.bootstrap_servers, tmp_path / "fleet", events=2400, store=store)
    print(f"fleet failover on {broker_kind}, {store} store:", result)  # takeover_s: from the SIGKILL
    assert result["lost"] == 0 and result["trained_twice"] == 0  # the lineage has every event exactly once
    assert result["not_predicted"] == 0  # the replicas predicted every event at least once
    assert result["trainer_exit"] == 0 and result["replica_exits"] == [0, 0]
    assert result["takeover_generation"] > 0
    # what the replicas serve never goes back (the successor continues above the newest snapshot),
    # and every served path is a path of the tree
    assert result["served_version_regressions"] == 0 and result["snapshots_refused"] == 0
    assert result["non_nested_paths"] == 0 and min(result["snapshots_swapped"]) > 1


def test_a_trainer_paused_past_its_session_writes_and_commits_nothing_once_resumed(start_broker, tmp_path):
    with start_broker(tmp_path / "broker.log") as broker:
        result = fencing_run(broker.bootstrap_servers, tmp_path / "fleet", events=3000)
    print("fleet fencing:", result)
    # (whether it tried to write before its consumer rejoined is a race, so its refusals are only
    # reported; tests/integration/test_scale_out.py fences a checkpointer deterministically)
    assert result["a_checkpoints_in_store_after_resume"] == 0 and result["a_commits_after_resume"] == 0
    assert result["lost"] == 0 and result["trained_twice"] == 0
    assert result["exits"] == [0, 0, 0]  # the fenced one stops as a standby, with nothing to save
    assert result["served_version_regressions"] == 0 and result["non_nested_paths"] == 0


def test_a_rollback_is_served_by_the_replicas_and_continued_by_the_trainer_with_the_lineage_whole(start_broker,
                                                                                                   tmp_path):
    with start_broker(tmp_path / "broker.log") as broker:
        result = rollback_run(broker.bootstrap_servers, tmp_path / "fleet")
    print("fleet rollback:", result)
    assert result["new_version"] > result["rolled_back_to"] and result["served_version_regressions"] == 0
    assert result["replica_served_it_after_s"] < 30  # a safety bound: the refresh period is 0.5 s
    assert result["lost"] == 0 and result["trained_twice"] == 0  # the final model's lineage: every event once
    assert result["exits"] == [0, 0]
