"""noop: returns the faulty model unchanged — the floor every approach is measured against."""

from fixbench.sdk import Approach, Outcome, serve


class Noop(Approach):
    name = "noop"
    version = "1.0.0"
    level = "baseline"
    summary = "Returns the faulty model unchanged (NOT_REPAIRED): the floor for every metric."
    needs = ()
    uses_torch = False

    def repair(self, ctx):
        ctx.progress(1.0, "done", "model returned unchanged")
        return Outcome(model=ctx.model_bytes, not_repaired=True, message="noop returns the model unchanged")


if __name__ == "__main__":
    serve(Noop)
