"""The evaluator service: scores repaired models against the original (see study-protocol.md)."""
