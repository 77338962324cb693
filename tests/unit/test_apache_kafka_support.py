"""The Apache Kafka test broker's pieces that need no JVM: its pinned version and its cluster ids."""

from tests.support.apache_kafka import BROKER_SETTINGS, VERSION, _cluster_id


def test_the_broker_version_is_pinned_to_a_4x_release():
    major, minor, patch = (int(part) for part in VERSION.split("."))
    assert major == 4 and minor >= 0 and patch >= 0


def test_a_cluster_id_never_starts_with_a_dash_the_storage_tool_would_read_as_an_option():
    ids = [_cluster_id() for _ in range(3000)]  # unchecked, about one in 64 would start with "-"
    assert not [i for i in ids if i.startswith("-")]
    assert {len(i) for i in ids} == {22} and len(set(ids)) == len(ids)


def test_the_test_broker_allows_the_short_sessions_the_failover_tests_use():
    assert int(BROKER_SETTINGS["group.min.session.timeout.ms"]) <= 2000
