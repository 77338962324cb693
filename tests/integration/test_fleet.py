"""Scale-out through the real parts: Tansu on a loopback S3 (moto), the model store in that S3,
trainers and predictor replicas run as ``hle-stream run --role trainer`` and ``hle-stream serve``."""

from tests.support.fleet import failover_run, fencing_run


def test_a_standby_takes_over_from_a_killed_trainer_and_replicas_predict_every_event(tmp_path):
    result = failover_run(tmp_path, events=2400)
    print("fleet failover:", result)
    assert result["lost"] == 0 and result["trained_twice"] == 0  # the lineage has every event exactly once
    assert result["not_predicted"] == 0  # the replicas predicted every event at least once
    assert result["trainer_exit"] == 0 and result["replica_exits"] == [0, 0]
    assert result["takeover_generation"] > 0


def test_a_trainer_paused_past_its_session_writes_and_commits_nothing_once_resumed(tmp_path):
    result = fencing_run(tmp_path, events=3000)
    print("fleet fencing:", result)
    # (whether it tried to write before its consumer rejoined is a race, so its refusals are only
    # reported; tests/integration/test_scale_out.py fences a checkpointer deterministically)
    assert result["a_checkpoints_in_store_after_resume"] == 0 and result["a_commits_after_resume"] == 0
    assert result["lost"] == 0 and result["trained_twice"] == 0
    assert result["exits"] == [0, 0]  # the fenced one stops as a standby, with nothing to save
