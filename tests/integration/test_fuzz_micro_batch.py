"""The fuzzer (benchmarks/fuzz.py) pushes generated records through the micro-batch step: nothing escapes."""

import json
import subprocess
import sys
from pathlib import Path

from hypothesis import strategies as st

FUZZ_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "fuzz.py"
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
fields = st.fixed_dictionaries({}, optional={
    "id": st.one_of(st.text(), st.integers(), json_values),
    "x": st.one_of(st.lists(st.one_of(st.floats(), st.integers()), max_size=10), json_values),
    "x_b64": st.one_of(st.text(), st.binary(max_size=40).map(lambda b: __import__("base64").b64encode(b).decode())),
    "dtype": st.one_of(st.sampled_from(["uint8", "float32", "int64"]), json_values),
    "shape": st.one_of(st.lists(st.integers(min_value=-2, max_value=2**40), max_size=5), json_values),
    "label": st.one_of(st.text(), st.lists(st.text(max_size=6), min_size=1, max_size=10).map("/".join), json_values),
    "ts": json_values,
})



def test_the_fuzzer_pushes_thousands_of_records_through_the_micro_batch_step_and_nothing_escapes():
    done = subprocess.run([sys.executable, str(FUZZ_SCRIPT), "--records", "5000", "--seed", "7"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(result)
    assert result["records"] == 5000 and result["seed"] == 7
    assert result["parser_exceptions_escaped"] == 0 and result["step_exceptions_escaped"] == 0, result["first_failures"]
    assert result["records_without_exactly_one_output"] == 0
    assert result["non_strict_json_outputs"] == 0
    assert result["batches_with_non_finite_weights"] == 0
    assert "internal_error" not in result["dead_lettered_by_reason"]  # every fault is named for what it is
    assert result["predicted"] > 1000  # the valid ones really went through the model
    assert {"not_json", "bad_label", "bad_id", "wrong_shape", "out_of_range", "duplicate_id"} <= set(
        result["dead_lettered_by_reason"])
