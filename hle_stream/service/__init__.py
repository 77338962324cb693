"""The service around the learner: event contract, processing core, checkpoints, the daemon loop, HTTP serving and telemetry."""
