"""Fault injection against the real daemon and a real broker; prints what each fault cost (the
scenarios are ``tests.support.fault_injection``; ``tests/integration/test_reliability.py`` asserts on them):

    python benchmarks/reliability.py --events 20000 --kills 10 --malformed-per-kind 600
    python benchmarks/reliability.py --broker apache-kafka      # the same against Apache Kafka 4.x
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import repo_root  # noqa: F401  (tests.support is importable after it)

from tests.support.brokers import BROKERS, running_broker
from tests.support.fault_injection import (
    adversarial_run,
    checkpoint_figures,
    kill_run,
    malformed_run,
    outage_run,
    sigterm_run,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--malformed-per-kind", type=int, default=600)
    parser.add_argument("--valid", type=int, default=3000)
    parser.add_argument("--outage-events", type=int, default=4000)
    parser.add_argument("--outage-seconds", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("reliability-run"))
    parser.add_argument("--broker", choices=BROKERS, default="tansu")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)

    def outage() -> dict:
        with running_broker(args.broker, args.workdir / "outage-broker.log", durable=True) as durable:
            return outage_run(durable, args.workdir / "outage", args.outage_events, args.outage_seconds)

    with running_broker(args.broker, args.workdir / "broker.log") as broker:
        for name, result in (
            ("kills", lambda: kill_run(broker, args.workdir / "kills", args.events, args.kills, args.seed,
                                       corrupt_at=args.kills // 2)),
            ("malformed", lambda: malformed_run(broker, args.workdir / "malformed", args.valid,
                                                args.malformed_per_kind, args.seed)),
            ("adversarial", lambda: adversarial_run(broker, args.workdir / "adversarial", args.valid, args.seed)),
            ("sigterm", lambda: sigterm_run(broker, args.workdir / "sigterm", args.events)),
            ("outage", outage),
            ("checkpoint_500", lambda: checkpoint_figures(args.workdir, 500)),
            ("checkpoint_5000", lambda: checkpoint_figures(args.workdir, 5000)),
        ):
            print(f"{name}: {json.dumps(result())}", flush=True)


if __name__ == "__main__":
    main()
