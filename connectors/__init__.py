"""Kafka in and out: client settings, topics, and the local development broker."""
