"""Evaluation: datasets, HLE streams, metrics, the offline benchmark and the producer simulation."""
