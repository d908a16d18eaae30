"""The orchestrator: reads a study spec, fans jobs out to repair services, records them in a
durable ledger and writes the results."""
