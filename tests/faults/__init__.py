"""Fault-injection suite: real load and real faults on a node of its own."""
