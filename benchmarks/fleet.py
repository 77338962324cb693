"""The predictor fleet beside one trainer (the model store in a loopback S3):
predicted events/s with 1 and with 2 replicas on the same stream, snapshot staleness p50/p99,
and /predict p50/p99 on a replica while the trainer trains and once it is idle; then a takeover
(``tests.support.fleet``; tests/integration/test_fleet.py asserts on the failover and fencing runs):

    python benchmarks/fleet.py --events 40000                       # on Tansu, its log in that S3
    python benchmarks/fleet.py --broker apache-kafka --replicas ''   # the takeover on Apache Kafka 4.x
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import repo_root  # noqa: F401  (tests.support is importable after it)

from tests.support.brokers import BROKERS, running_broker
from tests.support.fleet import failover_run, throughput_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40000)
    parser.add_argument("--replicas", default="1,2", help="replica counts to run, comma-separated")
    parser.add_argument("--workdir", type=Path, default=Path("fleet-run"))
    parser.add_argument("--broker", choices=BROKERS, default="tansu")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    with running_broker(args.broker, args.workdir / "broker.log", durable=True) as broker:
        for count in [int(c) for c in args.replicas.split(",") if c]:
            result = throughput_run(broker.bootstrap_servers, args.workdir / f"r{count}", args.events, count)
            print(json.dumps({"scenario": "throughput", "broker": args.broker, **result}), flush=True)
        result = failover_run(broker.bootstrap_servers, args.workdir / "failover", min(args.events, 6000))
        print(json.dumps({"scenario": "failover", "broker": args.broker, **result}), flush=True)


if __name__ == "__main__":
    main()
