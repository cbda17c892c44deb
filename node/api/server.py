"""Runs the control API with hypercorn on trio, bound to loopback only."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from hypercorn.config import Config
from hypercorn.trio import serve

from node.api.app import ControlApi

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from node.service import NodeService


async def serve_api(node: NodeService, *, task_status: TaskStatus[int]) -> None:
    """Serve the API until cancelled; reports the bound port through ``task_status``."""
    config = Config()
    config.bind = [f"{node.config.api_host}:{node.config.api_port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("zhtp.api")
    config.keep_alive_timeout = 30

    class _PortReporter:
        def started(self, binds: list[str] | None = None) -> None:
            first = (binds or ["http://127.0.0.1:0"])[0]
            task_status.started(int(first.rsplit(":", 1)[1]))

    await serve(ControlApi(node), config, task_status=_PortReporter())  # type: ignore[arg-type]
