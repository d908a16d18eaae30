"""Study-level analysis shared by the orchestrator's report and the evaluator: aggregation
into the papers' tables, statistics (tests, effect sizes, letter groups) and Kim et al.'s
recipe-repair verdicts. Pure functions on numbers and data frames: no gRPC, no models."""
