"""A fault-injecting HTTP proxy between boto3 and the local AWS server.

Point ``AWS_ENDPOINT_URL`` at it. Per request it can:

* answer with a throttling / unavailable error in the service's own protocol (SQS JSON, Firehose
  JSON, DynamoDB JSON, S3 XML), for a configurable share of requests;
* turn a Firehose ``PutRecordBatch`` into a partial failure: only some records are forwarded, the
  others come back with an ``ErrorCode`` and ``FailedPutCount`` counts them -- exactly what a real
  partial failure means (the failed records were not accepted);
* black out: every connection is closed at once without an answer, or answered 503, until the
  blackout ends (the server behind it keeps running and keeps its state).

It runs in a thread of the test process; the pipeline processes it fronts can be subprocesses.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_SERVICE = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/aws4_request")
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass
class FaultPlan:
    """What to inject. Mutate it while the proxy runs (tests switch faults on and off)."""

    error_rate: float = 0.0
    partial_put_rate: float = 0.0
    blackout_until: float = 0.0
    blackout_mode: str = "reset"  # "reset": close without answering; "503": answer 503
    seed: int = 0
    services: set[str] = field(default_factory=lambda: {"sqs", "firehose", "s3", "dynamodb"})
    # The services a blackout hits (None: every one) -- e.g. {"firehose"} for a Firehose-only outage.
    blackout_services: set[str] | None = None

    def blackout(self, seconds: float, mode: str = "reset", services: set[str] | None = None) -> None:
        self.blackout_mode = mode
        self.blackout_services = services
        self.blackout_until = time.monotonic() + seconds

    def in_blackout(self) -> bool:
        return time.monotonic() < self.blackout_until


@dataclass
class FaultStats:
    forwarded: int = 0
    errors_injected: int = 0
    partial_puts: int = 0
    records_refused: int = 0
    blacked_out: int = 0
    by_service: dict[str, int] = field(default_factory=dict)


def throttling_error(service: str) -> tuple[int, dict[str, str], bytes]:
    """An error answer in the protocol of ``service`` that botocore classifies as retryable."""
    if service == "s3":
        body = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
        return 503, {"Content-Type": "application/xml"}, body
    if service == "sqs":
        body = json.dumps(
            {"__type": "com.amazonaws.sqs#RequestThrottled", "message": "Rate exceeded"}
        ).encode()
        return (
            400,
            {"Content-Type": "application/x-amz-json-1.0", "x-amzn-query-error": "RequestThrottled;Sender"},
            body,
        )
    if service == "dynamodb":
        body = json.dumps(
            {
                "__type": "com.amazonaws.dynamodb.v20120810#ThrottlingException",
                "message": "Rate of requests exceeds the allowed throughput.",
            }
        ).encode()
        return 400, {"Content-Type": "application/x-amz-json-1.0"}, body
    body = json.dumps({"__type": "ServiceUnavailableException", "message": "Slow down."}).encode()
    return 503, {"Content-Type": "application/x-amz-json-1.1"}, body


class FaultProxy:
    def __init__(self, upstream: str, plan: FaultPlan | None = None):
        self.upstream = urlsplit(upstream)
        self.plan = plan or FaultPlan()
        self.stats = FaultStats()
        self._rng = random.Random(self.plan.seed)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _handle(self) -> None:
                proxy._serve(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _chance(self, rate: float) -> bool:
        with self._lock:
            return rate > 0 and self._rng.random() < rate

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        match = _SERVICE.search(handler.headers.get("Authorization", ""))
        service = match.group(1) if match else "other"
        with self._lock:
            self.stats.by_service[service] = self.stats.by_service.get(service, 0) + 1
        if self.plan.in_blackout() and (
            self.plan.blackout_services is None or service in self.plan.blackout_services
        ):
            with self._lock:
                self.stats.blacked_out += 1
            if self.plan.blackout_mode == "reset":
                sock = handler.connection
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                handler.close_connection = True
                sock.close()
                return
            self._answer(
                handler,
                *throttling_error("firehose" if service not in ("s3", "sqs", "dynamodb") else service),
            )
            return
        if service in self.plan.services and self._chance(self.plan.error_rate):
            with self._lock:
                self.stats.errors_injected += 1
            self._answer(handler, *throttling_error(service))
            return
        target = handler.headers.get("X-Amz-Target", "")
        if target.endswith(".PutRecordBatch") and self._chance(self.plan.partial_put_rate):
            self._partial_put(handler, body)
            return
        self._answer(handler, *self._forward(handler, body))

    def _forward(self, handler: BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_HEADERS}
        headers["Host"] = f"{self.upstream.hostname}:{self.upstream.port}"
        try:
            connection.request(handler.command, handler.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            answer_headers = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_HEADERS}
            if handler.command == "HEAD" and response.getheader("Content-Length"):
                answer_headers["Content-Length"] = response.getheader("Content-Length")
            with self._lock:
                self.stats.forwarded += 1
            return response.status, answer_headers, data
        finally:
            connection.close()

    def _partial_put(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        request = json.loads(body)
        records = request["Records"]
        with self._lock:
            failing = {i for i in range(len(records)) if self._rng.random() < 0.5} or {0}
        kept = [r for i, r in enumerate(records) if i not in failing]
        responses: list[dict] = []
        if kept:
            forwarded = {**request, "Records": kept}
            status, headers, data = self._forward(handler, json.dumps(forwarded).encode())
            if status != 200:
                self._answer(handler, status, headers, data)
                return
            accepted = iter(json.loads(data)["RequestResponses"])
        else:
            accepted = iter([])
        for i in range(len(records)):
            if i in failing:
                responses.append({"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "Slow down."})
            else:
                responses.append(next(accepted))
        with self._lock:
            self.stats.partial_puts += 1
            self.stats.records_refused += len(failing)
        payload = json.dumps(
            {"FailedPutCount": len(failing), "Encrypted": False, "RequestResponses": responses}
        )
        self._answer(handler, 200, {"Content-Type": "application/x-amz-json-1.1"}, payload.encode())

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        if "Content-Length" not in headers:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)
