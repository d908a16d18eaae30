"""The orchestrator's one client of the Evaluator service, used by the scheduler (phase 1:
every job's metrics) and the robustness phase (phase 2: PGD on the common inputs).

It dials through the project's channel helper (fixbench.grpcutil.aio_channel), so TLS and
the bearer token from FIXBENCH_TLS_* / FIXBENCH_TOKEN reach the evaluator in both phases, and
it sorts failures into the two kinds the orchestrator treats differently: an infrastructure
failure (retried) and a refusal of the request (a bug in the study, never retried)."""

from __future__ import annotations

import grpc
from google.protobuf import struct_pb2

from fixbench.faults.bundle import Fault
from fixbench.grpcutil import aio_channel
from fixbench.v1 import evaluator_pb2, evaluator_pb2_grpc
from fixbench.v1.common_pb2 import Digest
from orchestrator.jobs import digest

# Codes of the Evaluator that mean "the infrastructure failed, not the caller": retried.
EVALUATOR_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN,
             grpc.StatusCode.INTERNAL, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED,
             grpc.StatusCode.DEADLINE_EXCEEDED}


class InfraFailure(Exception):
    """A retryable failure of a service, the network or the store."""


class EvaluationRefused(RuntimeError):
    """The evaluator rejected a request as invalid: a bug in the study, not in the approach."""

    status = "EVALUATION_REFUSED"


class FaultError(EvaluationRefused):
    """The evaluator cannot score the fault's original model (FAILED_PRECONDITION): the
    fault's error, not the approach's nor the infrastructure's; the job stays pending."""

    status = "FAULT_ERROR"


class EvaluatorClient:
    def __init__(self, address: str):
        self.address = address
        self._channel: grpc.aio.Channel | None = None

    @property
    def stub(self) -> evaluator_pb2_grpc.EvaluatorStub:
        if self._channel is None:
            self._channel = aio_channel(self.address)
        return evaluator_pb2_grpc.EvaluatorStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def evaluate(self, job_key: str, fault: Fault, repaired: Digest, seed: int, properties: list[str],
                       settings: dict, timeout: float, what: str = "Evaluate") -> evaluator_pb2.EvaluationResult:
        """Scores `repaired` against the fault's original model; `what` names the call in errors."""
        packed = struct_pb2.Struct()
        packed.update(settings)
        request = evaluator_pb2.EvaluateRequest(
            job_id=job_key, original_model=digest(fault, "model"), repaired_model=repaired,
            test=digest(fault, "test"), repair=digest(fault, "repair"), dataset=fault.dataset,
            properties=properties, settings=packed, seed=seed, sensitive_attribute=fault.sensitive_attribute or "",
        )
        try:
            async for event in self.stub.Evaluate(request, timeout=timeout):
                if event is None:  # undecodable bytes (grpc.aio yields None for them)
                    raise InfraFailure(f"the {what} stream sent a message that is not an EvaluateResponse")
                if event.WhichOneof("event") == "result":
                    return event.result
        except grpc.aio.AioRpcError as exc:
            if exc.code() in EVALUATOR_RETRYABLE:
                raise InfraFailure(f"{what}: {exc.code().name}: {exc.details()}") from exc
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise FaultError(f"fault {fault.id}: {exc.details()} (job {job_key[:12]}); rebuild the fault") from exc
            raise EvaluationRefused(f"the evaluator refused {what} of job {job_key[:12]}: "
                                    f"{exc.code().name}: {exc.details()}") from exc
        raise InfraFailure(f"the {what} stream ended without a result (evaluator died?)")
