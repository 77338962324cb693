"""The fuzzer (benchmarks/fuzz.py) pushes generated records through the micro-batch step: nothing escapes."""

import json
import subprocess
import sys
from pathlib import Path

FUZZ_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "fuzz.py"


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
