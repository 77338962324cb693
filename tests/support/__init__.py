"""Harnesses that drive real daemons, brokers and stores (fault injection, the fleet topology):
used by the integration tests and by the benchmarks, never shipped in the installed package."""
