"""A small blocking client for the control API, used by the CLI and testnets.

It imports no libp2p, so CLI commands against a running node start fast.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

API_PORT_FILE = "api.port"

# Transfers run as long as the file takes; only a silent node times out.
TRANSFER_TIMEOUT = httpx.Timeout(connect=10.0, read=600.0, write=600.0, pool=10.0)


class ApiUnavailable(Exception):
    """No node answers for this data dir; the message says what to do."""


class ApiFailed(Exception):
    """The node answered with an error; the message is the node's."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def read_api_port(data_dir: Path) -> int:
    path = data_dir / API_PORT_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise ApiUnavailable(
            f"no running node for {data_dir} (start one with `zhtp --data-dir {data_dir} run`)"
        ) from None
    if not text.isdigit():
        raise ApiUnavailable(f"{path} does not hold a port number")
    return int(text)


class ApiClient:
    def __init__(
        self, data_dir: Path, *, timeout: float | None = 90.0, port: int | None = None
    ) -> None:
        self.data_dir = data_dir
        self.port = port if port is not None else read_api_port(data_dir)
        self._http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            timeout=timeout,
            # The node refuses state-changing requests without it (see app.py).
            headers={"x-zhtp-client": "zhtp-cli"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise ApiUnavailable(
                f"the node for {self.data_dir} does not answer on port {self.port} "
                "(is it running? a stale api.port is left by a crashed node)"
            ) from None
        except httpx.TimeoutException:
            raise ApiUnavailable(f"the node for {self.data_dir} did not answer in time") from None
        if response.status_code >= 400:
            try:
                message = str(response.json()["error"])
            except (ValueError, KeyError, TypeError):
                message = response.text.strip() or f"HTTP {response.status_code}"
            raise ApiFailed(response.status_code, message)
        return response

    def get_json(self, path: str, **params: str) -> Any:
        return self._send("GET", path, params=params).json()

    def post_json(self, path: str, body: dict[str, Any] | None = None, **params: str) -> Any:
        return self._send("POST", path, params=params, content=json.dumps(body or {})).json()

    def post_bytes(self, path: str, data: bytes, **params: str) -> Any:
        return self._send("POST", path, params=params, content=data).json()

    def get_bytes(self, path: str, **params: str) -> bytes:
        return self._send("GET", path, params=params).content

    def _error_of(self, response: httpx.Response) -> ApiFailed:
        try:
            message = str(json.loads(response.read())["error"])
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {response.status_code}"
        return ApiFailed(response.status_code, message)

    def upload(
        self, path: str, chunks: Iterable[bytes], params: Sequence[tuple[str, str | int | bool]]
    ) -> Any:
        """POST a streamed body (chunked); returns the JSON answer."""
        try:
            response = self._http.post(
                path,
                params=httpx.QueryParams(tuple(params)),
                content=chunks,
                timeout=TRANSFER_TIMEOUT,
            )
        except httpx.ConnectError:
            raise ApiUnavailable(f"the node for {self.data_dir} does not answer") from None
        except httpx.TimeoutException:
            raise ApiUnavailable("the node stopped answering during the upload") from None
        except httpx.TransportError as error:
            raise ApiUnavailable(f"the upload was cut off: {error}") from None
        if response.status_code >= 400:
            raise self._error_of(response)
        return response.json()

    @contextmanager
    def download(
        self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> Iterator[httpx.Response]:
        """POST a JSON body and stream the answer; raises ApiFailed for an error status."""
        try:
            with self._http.stream(
                "POST",
                path,
                content=json.dumps(body),
                headers=headers,
                timeout=TRANSFER_TIMEOUT,
            ) as response:
                if response.status_code >= 400:
                    raise self._error_of(response)
                yield response
        except httpx.ConnectError:
            raise ApiUnavailable(f"the node for {self.data_dir} does not answer") from None
        except httpx.TimeoutException:
            raise ApiUnavailable("the node stopped answering during the download") from None
