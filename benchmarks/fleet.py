"""The predictor fleet beside one trainer (Tansu on a loopback S3, the model store in that S3):
predicted events/s with 1 and with 2 replicas on the same stream, snapshot staleness p50/p99,
and /predict p50/p99 on a replica while the trainer trains and once it is idle; then a takeover
(``tests.support.fleet``; tests/integration/test_fleet.py asserts on the failover and fencing runs):

    python benchmarks/fleet.py --events 40000
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import repo_root  # noqa: F401  (tests.support is importable after it)

from tests.support.fleet import failover_run, throughput_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40000)
    parser.add_argument("--replicas", default="1,2", help="replica counts to run, comma-separated")
    parser.add_argument("--workdir", type=Path, default=Path("fleet-run"))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    for count in [int(c) for c in args.replicas.split(",")]:
        print(json.dumps({"scenario": "throughput", **throughput_run(args.workdir / f"r{count}", args.events,
                                                                     count)}), flush=True)
    print(json.dumps({"scenario": "failover", **failover_run(args.workdir / "failover", min(args.events, 6000))}),
          flush=True)


if __name__ == "__main__":
    main()
