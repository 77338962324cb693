"""Fault injection in CI: the scenarios of ``tests.support.fault_injection`` against real daemons
(``hle-stream run`` processes) and the real local broker, asserted on."""

import pytest

from tests.support import fault_injection as faults


@pytest.fixture(scope="module")
def broker(tmp_path_factory, start_broker):
    with start_broker(tmp_path_factory.mktemp("broker") / "broker.log") as running:
        yield running


def test_ten_sigkills_over_twenty_thousand_events_lose_nothing_and_train_nothing_twice(broker, tmp_path):
    result = faults.kill_run(broker, tmp_path, events=20_000, kills=10, seed=0, corrupt_at=5)
    print(result)
    assert result["lost"] == 0
    assert result["trained_twice"] == 0
    assert result["trained_unknown"] == 0
    assert result["lineage_length"] == result["model_seen"] == 20_000  # the log and the model agree
    assert result["checkpoints_corrupted"] == 1 and result["checkpoints_recovered"] == 1
    assert result["predictions_missing"] == 0  # at-least-once output
    assert result["final_exit_code"] == 0


def test_sigkills_between_events_and_their_delayed_labels_lose_no_join_and_train_nothing_twice(broker, tmp_path):
    result = faults.kill_run(broker, tmp_path, events=6_000, kills=4, seed=1, label_delay=500)
    print(result)
    assert result["labels_not_joined"] == 0  # the join store came back with every checkpoint
    assert result["lost"] == 0 and result["trained_twice"] == 0 and result["trained_unknown"] == 0
    assert result["lineage_length"] == result["model_seen"] == 6_000
    assert result["predictions_missing"] == 0 and result["final_exit_code"] == 0


def test_thousands_of_malformed_records_are_all_dead_lettered_and_no_valid_event_is_lost(broker, tmp_path):
    result = faults.malformed_run(broker, tmp_path, valid=3000, per_kind=500, seed=0)
    print(result)
    assert result["malformed"] >= 5000
    assert set(result["malformed_by_reason"]) == {"too_large", "not_json", "not_object", "missing_field", "wrong_type",
                                                  "bad_encoding", "wrong_shape", "non_finite", "bad_label"}
    assert result["dead_lettered"] == result["malformed"]
    assert result["dead_lettered_by_reason"] == result["malformed_by_reason"]
    assert result["wrong_reason_or_offset"] == 0
    assert result["dead_letter_bytes_kept"]
    assert result["crashes"] == 0
    assert result["valid_not_predicted"] == 0 and result["valid_not_trained"] == 0 and result["trained_twice"] == 0


def test_sigterm_at_full_speed_exits_cleanly_with_a_checkpoint(broker, tmp_path):
    result = faults.sigterm_run(broker, tmp_path, events=20_000)
    print(result)
    assert result["exit_code"] == 0
    assert result["seconds_to_exit"] < 60  # a safety limit on a loaded machine; benchmarks/reliability.py measures it
    assert 0 < result["learned_before_sigterm"] < 20_000  # stopped mid-stream
    assert result["checkpoint_seen"] == result["learned_before_sigterm"] == result["checkpoint_offset"]
    assert result["lost"] == 0 and result["trained_twice"] == 0


def test_a_broker_outage_makes_the_daemon_unready_then_it_resumes_with_nothing_lost(start_broker, tmp_path):
    with start_broker(tmp_path / "broker.log", durable=True) as durable:
        result = faults.outage_run(durable, tmp_path / "outage", events=4000, outage_s=8.0)
    print(result)
    assert result["unready_after_s"] is not None and result["unready_after_s"] < 3.0
    assert result["ready_probes_after_unready"] == 0 and result["probes_during_outage"] > 10
    assert result["lost"] == 0 and result["trained_twice"] == 0
    assert result["predictions_missing"] == 0
    assert result["exit_code"] == 0


def test_an_attackers_records_requests_and_full_disk_crash_stall_and_poison_nothing(broker, tmp_path):
    result = faults.adversarial_run(broker, tmp_path, valid=600, seed=0)
    print(result)
    assert set(result["attacks_by_category"]) == {"first_record", "crash_loop", "large_output", "poison", "label",
                                                  "duplicate"}
    assert result["wrong_reason_or_offset"] == 0  # each attack dead-lettered, at its offset, for what it is
    assert result["largest_dead_letter_bytes"] <= 1_000_000 and result["dead_letters_truncated"] >= 2
    assert result["crashes"] == 0 and result["stalls"] == 0
    assert result["valid_lost"] == 0 and result["trained_twice"] == 0
    assert result["non_finite_parameters"] == 0
    assert result["checkpoint_failures_logged"] >= 1 and result["ready_after_disk_freed"]
    assert result["second_daemon_exit_code"] == 2 and result["second_daemon_refused_with_message"]
    assert result["http_50mb_body_answer"].startswith("HTTP/1.1 413")
    assert result["http_slow_body_answer"].startswith("HTTP/1.1 408")
    assert result["http_slow_head_closed"]
    assert result["healthz_ok_under_abuse"] == result["healthz_probes"]
