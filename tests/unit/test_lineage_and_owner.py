"""The trained-ids log round-trips any id, and a model store has one owner: a consumer group and
the trained-ids log its trainers share."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.blob_store import DirectoryBlobStore
from hle_stream.service.lineage import LineageMismatchError, TrainedIdLog, read_ids
from hle_stream.service.store_owner import OWNER_KEY, StoreOwnedError, bind_store

AWKWARD_IDS = ["plain", "with\nnewline", "with\r\nCRLF", 'with "quotes"', "tab\tand/slash", "", " ", "ünïcødé",
               "\u2028line separator", "a\\b", "{\"json\": 1}"]


def test_any_id_is_one_line_and_reads_back_as_itself(tmp_path):
    log = TrainedIdLog(tmp_path / "ids.log")
    log.record(AWKWARD_IDS)
    assert log.commit() == len(AWKWARD_IDS)
    assert read_ids(tmp_path / "ids.log") == AWKWARD_IDS
    again = TrainedIdLog(tmp_path / "ids.log")  # a restart counts the ids, not the newlines inside them
    assert again.log_id == log.log_id
    assert again.truncate_to(3) == len(AWKWARD_IDS) - 3
    assert read_ids(tmp_path / "ids.log") == AWKWARD_IDS[:3]


@settings(max_examples=100, deadline=None)
@given(ids=st.lists(st.text(max_size=20), max_size=20))
def test_random_ids_round_trip(tmp_path_factory, ids):
    path = tmp_path_factory.mktemp("log") / "ids.log"
    log = TrainedIdLog(path)
    log.record(ids)
    log.commit()
    assert read_ids(path) == ids and TrainedIdLog(path).commit() == len(ids)


def test_a_log_of_the_old_format_or_shorter_than_the_checkpoint_is_refused(tmp_path):
    (tmp_path / "old.log").write_text("e1\ne2\n")
    with pytest.raises(LineageMismatchError, match="not a trained-ids log of this version"):
        TrainedIdLog(tmp_path / "old.log")
    log = TrainedIdLog(tmp_path / "new.log")
    with pytest.raises(LineageMismatchError, match="holds 0 ids but the checkpoint covers 5"):
        log.truncate_to(5)


def test_the_first_daemon_owns_the_store_and_another_group_is_refused_naming_both(tmp_path):
    blobs = DirectoryBlobStore(tmp_path)
    bind_store(blobs, "trainers", "log-1")
    bind_store(blobs, "trainers", "log-1")  # its own group and log: fine, every restart
    with pytest.raises(StoreOwnedError, match="belongs to consumer group 'trainers', not 'trainers-typo'"):
        bind_store(blobs, "trainers-typo", "log-1")
    bind_store(blobs, "trainers-typo", "log-1", take_over=True)  # told to: the typo's group owns it now
    assert json.loads(blobs.get(OWNER_KEY))["group"] == "trainers-typo"
    with pytest.raises(StoreOwnedError, match="belongs to consumer group 'trainers-typo', not 'trainers'"):
        bind_store(blobs, "trainers", "log-1")


def test_trainers_of_one_store_keep_one_trained_ids_log_or_none(tmp_path):
    blobs = DirectoryBlobStore(tmp_path)
    bind_store(blobs, "g", None)
    bind_store(blobs, "g", "log-1")  # a store without a log takes the first one it is given
    with pytest.raises(StoreOwnedError, match="keeps another \\(log-2\\)"):
        bind_store(blobs, "g", "log-2")
    with pytest.raises(StoreOwnedError, match="keeps none"):
        bind_store(blobs, "g", None)
