"""The start-up helper that imports slow modules in a thread."""

import pytest

from hle_stream.service.background_import import BackgroundImport


def test_the_module_is_the_imported_one():
    import json

    assert BackgroundImport("json").module() is json


def test_a_failed_import_fails_where_the_module_is_used():
    loading = BackgroundImport("hle_stream_no_such_module")
    with pytest.raises(ModuleNotFoundError):
        loading.module()
