"""``zhtp run``: the node process. Prints where it listens, stops cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import errno
import json
import logging
import signal
import sys
from collections.abc import Callable

import trio

from node.api.server import serve_api
from node.config import NodeConfig
from node.service import ListenError, NodeService


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # py-libp2p logs routine connection churn at INFO/WARNING; keep ours readable.
    if level != "debug":
        logging.getLogger("libp2p").setLevel(logging.ERROR)
        logging.getLogger("zhtp.api").setLevel(logging.WARNING)
        # A failed bind is reported by NodeService as one clear ListenError;
        # the transport's own log line would only repeat it.
        logging.getLogger("libp2p.transport.tcp.tcp").setLevel(logging.CRITICAL)


def _banner(node: NodeService) -> tuple[dict[str, object], str]:
    boot = node.bootstrap_result
    info: dict[str, object] = {
        "event": "started",
        "peer_id": node.peer_id.to_base58(),
        "addrs": node.full_addrs(),
        "api": f"http://127.0.0.1:{node.api_port}",
        "bootstrap_configured": boot.configured,
        "bootstrap_reached": boot.reached,
        "routing_table_size": len(node.dht.table),
    }
    lines = [f"ZHTP node {node.peer_id.to_base58()}"]
    lines += [f"  listening on {a}" for a in node.full_addrs()]
    lines.append(f"  control API on http://127.0.0.1:{node.api_port}")
    if boot.configured == 0:
        lines.append("  no bootstrap peers configured: running alone")
    elif boot.reached == 0:
        lines.append(
            f"  none of {boot.configured} bootstrap peers reachable: running alone "
            "(retrying in the background)"
        )
    else:
        lines.append(
            f"  joined through {boot.reached} of {boot.configured} bootstrap peers; "
            f"{len(node.dht.table)} peers in the routing table"
        )
    return info, "\n".join(lines)


async def _main(config: NodeConfig, json_output: bool) -> None:
    node = NodeService(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: node.run(serve_api=serve_api, task_status=task_status)
        )
        info, text = _banner(node)
        print(json.dumps(info) if json_output else text, flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                print("" if json_output else "stopping", flush=True)
                nursery.cancel_scope.cancel()
                break


class DaemonStartError(Exception):
    """The node could not start for a reason its operator can fix (one line)."""


def _find(error: BaseException, wanted: Callable[[BaseException], bool]) -> BaseException | None:
    """The first exception in ``error`` (exception groups included) that is ``wanted``.

    The listeners start inside nurseries, so a start-up failure arrives
    wrapped in (possibly nested) exception groups.
    """
    if wanted(error):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _find(inner, wanted)
            if found is not None:
                return found
    return None


def _is_address_in_use(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno == errno.EADDRINUSE


def run_daemon(config: NodeConfig, *, json_output: bool = False) -> None:
    _configure_logging(config.log_level)
    try:
        trio.run(_main, config, json_output)
    except BaseException as error:
        listen_error = _find(error, lambda e: isinstance(e, ListenError))
        if listen_error is not None:
            raise DaemonStartError(str(listen_error)) from None
        in_use = _find(error, _is_address_in_use)
        if not isinstance(in_use, OSError):
            raise
        raise DaemonStartError(
            f"cannot listen: address already in use ({in_use.strerror or in_use}); "
            f"is another node running? (API port {config.api_port}, "
            f"listen {', '.join(config.listen_addrs)})"
        ) from None
