"""The local control API: a small ASGI app over a running NodeService.

JSON in and out under ``/api/v0/``; record values travel as raw bodies.
Errors are JSON ``{"error": "..."}`` with a 4xx/5xx status: 400 for input
the caller got wrong, 404 for nothing found, 413 for too large, 502 when the
network could not do it. Served on loopback only (see server.py).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import multiaddr
import trio
from libp2p.peer.id import ID

from bootstrap.peers import BootstrapAddrError, parse_peer_addr
from node.api.files import FileApiError, FileRoutes, send_json
from node.api.market import MarketRoutes
from node.api.metrics import render_metrics
from node.files.get import GetFailed
from node.records.validators import RecordInvalid, blob_key, format_key, parse_key
from protocols.framing import PEER_FAILURES
from protocols.ping.service import ping

if TYPE_CHECKING:
    from node.service import NodeService

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# A record body may be max_record_size; a little slack for nothing else.
log = logging.getLogger(__name__)

PING_TIMEOUT = 10.0
# GET /zhtp/<cid>: public content over plain HTTP, like an IPFS gateway.
GATEWAY_PREFIX = "/zhtp/"
OP_TIMEOUT = 60.0


# The API has no authentication: it is safe only while nothing but local
# programs can use it. A browser is the hole: a web page may send requests to
# 127.0.0.1, and DNS rebinding can even let it read the answers. So the Host
# header must name a loopback address (defeats rebinding), and every POST
# must carry CLIENT_HEADER, which a page cannot add without a CORS preflight
# that this API never grants (defeats cross-site requests with side effects).
CLIENT_HEADER = b"x-zhtp-client"
_LOOPBACK_HOSTS = {b"127.0.0.1", b"localhost", b"[::1]"}


def _host_name(value: bytes) -> bytes:
    """``127.0.0.1:8080`` → ``127.0.0.1``; ``[::1]:8080`` → ``[::1]``."""
    if value.startswith(b"["):
        return value[: value.find(b"]") + 1]
    return value.split(b":", 1)[0]


def _refusal(scope: Scope) -> str | None:
    headers = dict(scope.get("headers", []))
    if _host_name(headers.get(b"host", b"")).lower() not in _LOOPBACK_HOSTS:
        return "the control API answers only requests addressed to a loopback host"
    if scope["method"] != "GET" and CLIENT_HEADER not in headers:
        return f"requests that change state need the {CLIENT_HEADER.decode()} header"
    return None


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Request:
    def __init__(self, scope: Scope, body: bytes) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        raw_query = scope.get("query_string", b"").decode("latin-1")
        self.query = {k: v[-1] for k, v in parse_qs(raw_query).items()}
        self.body = body

    def arg(self, name: str) -> str:
        value: str | None = self.query.get(name)
        if not value:
            raise ApiError(400, f"missing query parameter {name!r}")
        return value

    def json(self) -> dict[str, Any]:
        try:
            data = json.loads(self.body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ApiError(400, f"body is not JSON: {error}") from error
        if not isinstance(data, dict):
            raise ApiError(400, "body must be a JSON object")
        return data


class Response:
    def __init__(
        self, body: bytes, status: int = 200, content_type: str = "application/json"
    ) -> None:
        self.body = body
        self.status = status
        self.content_type = content_type

    @classmethod
    def json(cls, data: object, status: int = 200) -> Response:
        return cls(json.dumps(data).encode() + b"\n", status)


def _peer_id(text: str) -> ID:
    try:
        return ID.from_base58(text)
    except Exception as error:  # base58 and multihash errors vary by input
        raise ApiError(400, f"not a PeerID: {text!r}") from error


def _key(text: str) -> bytes:
    try:
        return parse_key(text)
    except ValueError as error:
        raise ApiError(400, str(error)) from error


def _addr_text(raw: bytes) -> str:
    try:
        return str(multiaddr.Multiaddr(raw))
    except Exception:  # an address we cannot print is shown as hex
        return raw.hex()


class ControlApi:
    def __init__(self, node: NodeService) -> None:
        self.node = node
        self.started = time.time()
        self.routes: dict[tuple[str, str], Callable[[Request], Awaitable[Response]]] = {
            ("GET", "/api/v0/id"): self.identity,
            ("GET", "/api/v0/status"): self.status,
            ("GET", "/api/v0/peers"): self.peers,
            ("POST", "/api/v0/ping"): self.ping,
            ("POST", "/api/v0/dht/put"): self.dht_put,
            ("GET", "/api/v0/dht/get"): self.dht_get,
            ("GET", "/api/v0/dht/find-node"): self.find_node,
            ("GET", "/api/v0/dht/providers"): self.providers,
            ("POST", "/api/v0/dht/provide"): self.provide,
            ("GET", "/api/v0/dht/lookup"): self.lookup,
            ("GET", "/metrics"): self.metrics,
        }
        self.routes.update(MarketRoutes(node).routes())
        self.files = FileRoutes(node)
        self.stream_routes = self.files.routes()

    @property
    def max_body(self) -> int:
        return self.node.config.max_record_size + 4096

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        refusal = _refusal(scope)
        if refusal is not None:
            await send_json(send, {"error": refusal}, 403)
            return
        stream_route = self.stream_routes.get((scope["method"], scope["path"]))
        if scope["method"] == "GET" and scope["path"].startswith(GATEWAY_PREFIX):
            stream_route = self.files.gateway
        if stream_route is not None:
            await self._serve_streaming(stream_route, scope, receive, send)
            return
        try:
            body = await self._read_body(receive)
            route = self.routes.get((scope["method"], scope["path"]))
            if route is None:
                known = {path for _, path in self.routes}
                status = 405 if scope["path"] in known else 404
                raise ApiError(status, f"no route {scope['method']} {scope['path']}")
            response = await route(Request(scope, body))
        except ApiError as error:
            response = Response.json({"error": error.message}, error.status)
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (b"content-type", response.content_type.encode()),
                    (b"content-length", str(len(response.body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.body})

    async def _serve_streaming(
        self,
        route: Callable[[Scope, Receive, Send], Awaitable[None]],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await route(scope, receive, tracking_send)
        except FileApiError as error:
            if started:
                raise  # the body is cut short; the client sees it by Content-Length
            await send_json(send, {"error": error.message}, error.status)
        except GetFailed as error:
            if started:
                # Returning without the final body frame leaves the response
                # short of its Content-Length: the client sees it cut off, and
                # never a wrong byte. One log line, not an ASGI traceback.
                log.warning("get failed after the response started: %s", error)
                return
            await send_json(send, {"error": str(error)}, 422)

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ApiError(400, "client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise ApiError(413, f"body larger than {self.max_body} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    # -- routes ----------------------------------------------------------------

    async def identity(self, request: Request) -> Response:
        node = self.node
        return Response.json(
            {
                "peer_id": node.peer_id.to_base58(),
                "addrs": node.full_addrs(),
                "version": node.status().version,
                "api_port": node.api_port,
                "data_dir": str(node.config.data_dir),
            }
        )

    async def status(self, request: Request) -> Response:
        node = self.node
        boot = node.bootstrap_result
        return Response.json(
            {
                "peer_id": node.peer_id.to_base58(),
                "uptime_seconds": round(time.time() - self.started, 1),
                "routing_table_size": len(node.dht.table),
                "buckets": {str(k): v for k, v in sorted(node.dht.table.bucket_sizes().items())},
                "connected_peers": len(node.host.get_connected_peers()),
                "records": node.store.count(),
                "providers": node.store.provider_count(),
                "bootstrap": {"configured": boot.configured, "reached": boot.reached},
                "running_alone": len(node.dht.table) == 0,
                "counters": {name: c.snapshot() for name, c in node.counters.items()},
            }
        )

    async def peers(self, request: Request) -> Response:
        table = self.node.dht.table
        now = trio.current_time()
        peers = []
        for contact in table.contacts():
            seen = table.last_seen(contact.peer_id)
            peers.append(
                {
                    "peer_id": ID(contact.peer_id).to_base58(),
                    "addrs": [_addr_text(a) for a in contact.addrs],
                    "bucket": table.bucket_index(contact.kad_id),
                    "seen_seconds_ago": None if seen is None else round(now - seen, 1),
                }
            )
        peers.sort(key=lambda p: (p["bucket"], p["peer_id"]))
        connected = [p.to_base58() for p in self.node.host.get_connected_peers()]
        return Response.json({"peers": peers, "connected": sorted(connected)})

    async def ping(self, request: Request) -> Response:
        data = request.json()
        target = data.get("addr") or data.get("peer")
        if not isinstance(target, str) or not target:
            raise ApiError(400, 'give {"addr": "/ip4/.../tcp/.../p2p/<PeerID>"} or {"peer": ...}')
        if target.startswith("/"):
            try:
                info = parse_peer_addr(target)
            except BootstrapAddrError as error:
                raise ApiError(400, str(error)) from error
            peer_id, addrs = info.peer_id, info.addrs
        else:
            peer_id = _peer_id(target).to_bytes()
            contact = self.node.dht.table.get(peer_id)
            addrs = contact.addrs if contact is not None else ()
        try:
            with trio.fail_after(PING_TIMEOUT):
                result = await ping(self.node.open_stream, peer_id, addrs)
        except PEER_FAILURES as error:
            raise ApiError(502, f"ping failed: {type(error).__name__}: {error}") from error
        status = result.status
        return Response.json(
            {
                "peer_id": ID(peer_id).to_base58(),
                "rtt_ms": round(result.rtt_seconds * 1000, 3),
                "version": status.version,
                "listen_addrs": [_addr_text(a) for a in status.listen_addrs],
                "free_storage_bytes": status.free_storage_bytes,
                "tiers": [t.name.lower() for t in status.tiers],
            }
        )

    async def dht_put(self, request: Request) -> Response:
        value = request.body
        # Without a key the value is a content-addressed blob; with one it may
        # be any namespace's record (a name, an identity), which the
        # namespace's validator accepts or refuses.
        raw_key = request.query.get("key")
        key = _key(raw_key) if raw_key else blob_key(value)
        try:
            with trio.fail_after(OP_TIMEOUT):
                report = await self.node.dht.put(key, value)
        except RecordInvalid as error:
            raise ApiError(400, f"record refused: {error.reason}") from error
        except trio.TooSlowError as error:
            raise ApiError(504, "put timed out") from error
        return Response.json(
            {
                "key": format_key(key),
                "accepted": report.accepted,
                "target": report.target,
                "holders": [ID(h).to_base58() for h in report.holders],
                "failures": {ID(p).to_base58(): r for p, r in report.failures.items()},
            }
        )

    async def dht_get(self, request: Request) -> Response:
        key = _key(request.arg("key"))
        try:
            with trio.fail_after(OP_TIMEOUT):
                report = await self.node.dht.get(key)
        except trio.TooSlowError as error:
            raise ApiError(504, "get timed out") from error
        if report.value is None:
            asked = report.responders
            raise ApiError(404, f"no valid record for {format_key(key)} ({asked} nodes asked)")
        return Response(report.value, content_type="application/octet-stream")

    async def find_node(self, request: Request) -> Response:
        peer = _peer_id(request.arg("peer"))
        with trio.move_on_after(OP_TIMEOUT):
            contact = await self.node.dht.find_peer(peer.to_bytes())
            if contact is not None:
                return Response.json(
                    {"peer_id": peer.to_base58(), "addrs": [_addr_text(a) for a in contact.addrs]}
                )
        raise ApiError(404, f"peer {peer.to_base58()} not found")

    async def providers(self, request: Request) -> Response:
        key = _key(request.arg("key"))
        with trio.move_on_after(OP_TIMEOUT):
            found = await self.node.dht.find_providers(key)
            return Response.json(
                {
                    "key": format_key(key),
                    "providers": [
                        {
                            "peer_id": ID(p.peer_id).to_base58(),
                            "addrs": [_addr_text(a) for a in p.addrs],
                        }
                        for p in found
                    ],
                }
            )
        raise ApiError(504, "provider lookup timed out")

    async def provide(self, request: Request) -> Response:
        key = _key(request.arg("key"))
        with trio.move_on_after(OP_TIMEOUT):
            sent = await self.node.dht.provide(key)
            return Response.json({"key": format_key(key), "announced_to": sent})
        raise ApiError(504, "provide timed out")

    async def lookup(self, request: Request) -> Response:
        key = _key(request.arg("key"))
        with trio.move_on_after(OP_TIMEOUT):
            report = await self.node.dht.lookup(key)
            return Response.json(
                {
                    "closest": [ID(c.peer_id).to_base58() for c in report.closest],
                    "queried": report.queried,
                    "max_hops": report.max_hops,
                    "seconds": report.seconds,
                }
            )
        raise ApiError(504, "lookup timed out")

    async def metrics(self, request: Request) -> Response:
        return Response(render_metrics(self.node), content_type="text/plain; version=0.0.4")
