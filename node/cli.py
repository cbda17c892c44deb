"""``zhtp``: run a node, talk to a running node, run local testnets.

Every command takes ``--json`` for scripts. A mistake gets one line on
stderr (``zhtp: error: ...``) and a non-zero exit: 2 for a wrong command
line, 1 for everything else. Commands that talk to a node go through its
control API and import no libp2p, so they start fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from node.api.client import ApiClient, ApiFailed, ApiUnavailable
from node.cli_files import FileCommandError, add_file_commands
from node.cli_identity import IdentityCommandError, add_identity_commands, identity_text
from node.cli_market import add_market_commands
from node.config import ConfigError, NodeConfig, load_config, resolve_data_dir, write_config


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"zhtp: error: {message} (see `{self.prog} --help`)\n")
        sys.exit(2)


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if args.json:
        print(json.dumps(data, indent=None))
    else:
        print(text)


def _client(args: argparse.Namespace) -> ApiClient:
    return ApiClient(args.data_dir)


def _identity_command(
    fn: Callable[[argparse.Namespace], dict[str, Any]],
) -> Callable[[argparse.Namespace], None]:
    def handler(args: argparse.Namespace) -> None:
        try:
            info = fn(args)
        except IdentityCommandError as error:
            raise CliError(str(error)) from None
        _emit(args, info, identity_text(info))

    return handler


def _file_command(
    fn: Callable[[argparse.Namespace, ApiClient], dict[str, Any]],
    text: Callable[[dict[str, Any]], str],
) -> Callable[[argparse.Namespace], None]:
    def handler(args: argparse.Namespace) -> None:
        with _client(args) as api:
            try:
                info = fn(args, api)
            except FileCommandError as error:
                raise CliError(str(error)) from None
        if getattr(args, "command", "") == "get" and args.output is None:
            return  # the file itself went to stdout
        _emit(args, info, text(info))

    return handler


# -- node lifecycle -------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> None:
    data_dir: Path = args.data_dir
    if (data_dir / "config.toml").exists() and not args.force:
        raise CliError(f"{data_dir} is already initialised (use --force to rewrite its config)")
    overrides: dict[str, Any] = {}
    if args.listen:
        overrides["listen_addrs"] = tuple(args.listen)
    if args.bootstrap:
        overrides["bootstrap"] = tuple(args.bootstrap)
    if args.no_default_bootstrap:
        overrides["use_default_bootstrap"] = False
    if args.api_port is not None:
        overrides["api_port"] = args.api_port
    config = NodeConfig(data_dir=data_dir, **overrides)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    from node.host import load_or_create_key, peer_id_of  # imports libp2p: only here

    peer_id = peer_id_of(load_or_create_key(data_dir)).to_base58()
    path = write_config(config)
    _emit(
        args,
        {"peer_id": peer_id, "data_dir": str(data_dir), "config": str(path)},
        f"initialised node {peer_id}\n  data dir: {data_dir}\n  config:   {path}",
    )


def cmd_run(args: argparse.Namespace) -> None:
    data_dir: Path = args.data_dir
    if not (data_dir / "config.toml").exists():
        raise CliError(f"no node at {data_dir}: run `zhtp --data-dir {data_dir} init` first")
    overrides: dict[str, Any] = {"log_level": args.log_level}
    if args.bootstrap:
        overrides["bootstrap"] = tuple(args.bootstrap)
    if args.listen:
        overrides["listen_addrs"] = tuple(args.listen)
    config = load_config(data_dir, **overrides)
    from node.daemon import DaemonStartError, run_daemon  # imports libp2p: only here

    try:
        run_daemon(config, json_output=args.json)
    except DaemonStartError as error:
        raise CliError(str(error)) from None


# -- commands against a running node -------------------------------------------


def cmd_id(args: argparse.Namespace) -> None:
    with _client(args) as api:
        info = api.get_json("/api/v0/id")
    addrs = "\n".join(f"  {a}" for a in info["addrs"])
    _emit(args, info, f"peer id: {info['peer_id']}\nversion: {info['version']}\naddrs:\n{addrs}")


def cmd_status(args: argparse.Namespace) -> None:
    with _client(args) as api:
        info = api.get_json("/api/v0/status")
    boot = info["bootstrap"]
    lines = [
        f"peer id:        {info['peer_id']}",
        f"uptime:         {info['uptime_seconds']} s",
        f"routing table:  {info['routing_table_size']} peers"
        + (" (running alone)" if info["running_alone"] else ""),
        f"connections:    {info['connected_peers']}",
        f"records held:   {info['records']}",
        f"provider notes: {info['providers']}",
        f"bootstrap:      reached {boot['reached']} of {boot['configured']}",
    ]
    _emit(args, info, "\n".join(lines))


def cmd_peers(args: argparse.Namespace) -> None:
    with _client(args) as api:
        info = api.get_json("/api/v0/peers")
    peers = info["peers"]
    if not peers:
        text = "routing table is empty (running alone)"
    else:
        rows = [f"{'bucket':>6}  {'seen':>7}  peer / address"]
        for p in peers:
            seen = "-" if p["seen_seconds_ago"] is None else f"{p['seen_seconds_ago']}s"
            addr = p["addrs"][0] if p["addrs"] else "-"
            rows.append(f"{p['bucket']:>6}  {seen:>7}  {p['peer_id']}  {addr}")
        rows.append(f"{len(peers)} peers in the routing table, {len(info['connected'])} connected")
        text = "\n".join(rows)
    _emit(args, info, text)


def cmd_ping(args: argparse.Namespace) -> None:
    target: str = args.target
    body = {"addr": target} if target.startswith("/") else {"peer": target}
    with _client(args) as api:
        info = api.post_json("/api/v0/ping", body)
    free_gib = info["free_storage_bytes"] / (1 << 30)
    text = (
        f"pong from {info['peer_id']}: {info['rtt_ms']:.2f} ms\n"
        f"  version {info['version']}, {free_gib:.1f} GiB free, tiers {', '.join(info['tiers'])}"
    )
    _emit(args, info, text)


def cmd_dht_put(args: argparse.Namespace) -> None:
    path = Path(args.file)
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else path.read_bytes()
    except OSError as error:
        raise CliError(f"cannot read {args.file}: {error.strerror}") from error
    with _client(args) as api:
        info = api.post_bytes("/api/v0/dht/put", data)
    text = f"{info['key']}\naccepted by {info['accepted']} of {info['target']} holders"
    if info.get("failures"):
        text += "".join(f"\n  refused by {p}: {r}" for p, r in info["failures"].items())
    _emit(args, info, text)


def cmd_dht_get(args: argparse.Namespace) -> None:
    with _client(args) as api:
        data = api.get_bytes("/api/v0/dht/get", key=args.key)
    if args.output is None:
        if args.json:
            print(json.dumps({"key": args.key, "size": len(data), "value_hex": data.hex()}))
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        return
    out = Path(args.output)
    # Write beside the target and rename, so a failure never leaves a partial file.
    fd, tmp = tempfile.mkstemp(dir=out.parent if str(out.parent) else ".", prefix=".zhtp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _emit(
        args,
        {"key": args.key, "size": len(data), "output": str(out)},
        f"wrote {len(data)} bytes to {out}",
    )


def cmd_dht_find_node(args: argparse.Namespace) -> None:
    with _client(args) as api:
        info = api.get_json("/api/v0/dht/find-node", peer=args.peer)
    _emit(args, info, info["peer_id"] + "".join(f"\n  {a}" for a in info["addrs"]))


def cmd_dht_providers(args: argparse.Namespace) -> None:
    with _client(args) as api:
        info = api.get_json("/api/v0/dht/providers", key=args.key)
    providers = info["providers"]
    if providers:
        text = "\n".join(
            f"{p['peer_id']}  {p['addrs'][0] if p['addrs'] else '-'}" for p in providers
        )
    else:
        text = f"no providers found for {info['key']}"
    _emit(args, info, text)


def cmd_dht_provide(args: argparse.Namespace) -> None:
    with _client(args) as api:
        info = api.post_json("/api/v0/dht/provide", key=args.key)
    _emit(args, info, f"announced as provider of {info['key']} to {info['announced_to']} nodes")


# -- testnets -------------------------------------------------------------------


def cmd_testnet_up(args: argparse.Namespace) -> None:
    from bootstrap.testnet import TestnetError, up

    try:
        net = up(
            Path(args.dir),
            args.nodes,
            min_peers=args.min_peers,
            timeout=args.timeout,
            progress=not args.json,
        )
    except TestnetError as error:
        raise CliError(str(error)) from error
    lines = [f"testnet of {len(net['nodes'])} nodes up in {args.dir}"]
    for i, n in enumerate(net["nodes"]):
        lines.append(f"  node-{i}  pid {n['pid']:>7}  api {n['api_port']:>5}  {n['peer_id']}")
    lines.append(f"try: zhtp --data-dir {Path(args.dir) / 'node-1'} peers")
    _emit(args, net, "\n".join(lines))


def cmd_testnet_status(args: argparse.Namespace) -> None:
    from bootstrap.testnet import TestnetError, status

    try:
        rows = status(Path(args.dir))
    except TestnetError as error:
        raise CliError(str(error)) from error
    lines = [f"{'node':<8} {'pid':>7} {'state':<8} {'peers':>5} {'records':>7}  peer id"]
    for r in rows:
        lines.append(
            f"{r['name']:<8} {r['pid']:>7} {r['state']:<8} {r.get('peers', '-')!s:>5} "
            f"{r.get('records', '-')!s:>7}  {r['peer_id']}"
        )
    _emit(args, {"nodes": rows}, "\n".join(lines))


def cmd_testnet_down(args: argparse.Namespace) -> None:
    from bootstrap.testnet import TestnetError, down

    try:
        stopped = down(Path(args.dir))
    except TestnetError as error:
        raise CliError(str(error)) from error
    _emit(args, {"stopped": stopped}, f"stopped {len(stopped)} node processes")


def cmd_demo(args: argparse.Namespace) -> None:
    from bootstrap.demo import run_demo
    from bootstrap.testnet import TestnetError

    try:
        run_demo(nodes=args.nodes, json_output=args.json, keep=args.keep)
    except TestnetError as error:
        raise CliError(str(error)) from error


# -- parser -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print machine-readable JSON"
    )
    common.add_argument(
        "--data-dir",
        default=argparse.SUPPRESS,
        help="the node's data directory (default: $ZHTP_PATH or ~/.zhtp)",
    )

    parser = _Parser(prog="zhtp", description="ZHTP peer-to-peer storage node", parents=[common])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(
        name: str, fn: Callable[[argparse.Namespace], None], help: str, into: Any = commands
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = into.add_parser(name, help=help, parents=[common])
        sub.set_defaults(fn=fn)
        return sub

    p = command("init", cmd_init, "create a node: data dir, identity key, config file")
    p.add_argument("--listen", action="append", help="listen multiaddr (repeatable)")
    p.add_argument("--bootstrap", action="append", help="bootstrap peer multiaddr (repeatable)")
    p.add_argument(
        "--no-default-bootstrap", action="store_true", help="do not use the packaged bootstrap list"
    )
    p.add_argument("--api-port", type=int, help="control API port (default: any free port)")
    p.add_argument("--force", action="store_true", help="rewrite an existing config")

    p = command("run", cmd_run, "run the node until interrupted")
    p.add_argument("--bootstrap", action="append", help="bootstrap peer multiaddr (repeatable)")
    p.add_argument("--listen", action="append", help="listen multiaddr (repeatable)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    command("id", cmd_id, "show the running node's PeerID and addresses")
    command("status", cmd_status, "show the running node's routing table and store")
    command("peers", cmd_peers, "list the routing table")
    p = command("ping", cmd_ping, "ping a peer over /zhtp/ping/1.0.0")
    p.add_argument("target", help="a full multiaddr with /p2p/<PeerID>, or a PeerID")

    dht = commands.add_parser("dht", help="DHT records and routing", parents=[common])
    dht_commands = dht.add_subparsers(dest="dht_command", required=True, parser_class=_Parser)
    p = command("put", cmd_dht_put, "store a file as a /zhtp/blob/ record", dht_commands)
    p.add_argument("file", help="file to store (- for stdin); at most max_record_size bytes")
    p = command("get", cmd_dht_get, "fetch a record from the network", dht_commands)
    p.add_argument("key", help="/zhtp/blob/<hex>, a bare hex digest, or a /zhtp/name/ key")
    p.add_argument("-o", "--output", help="write the value to this file (default: stdout)")
    p = command("find-node", cmd_dht_find_node, "find a peer's addresses", dht_commands)
    p.add_argument("peer", help="PeerID")
    p = command("providers", cmd_dht_providers, "find providers of a key", dht_commands)
    p.add_argument("key")
    p = command("provide", cmd_dht_provide, "announce this node as a provider", dht_commands)
    p.add_argument("key")

    testnet = commands.add_parser("testnet", help="local multi-process testnets", parents=[common])
    t_commands = testnet.add_subparsers(dest="testnet_command", required=True, parser_class=_Parser)
    p = command("up", cmd_testnet_up, "start N node processes on 127.0.0.1", t_commands)
    p.add_argument("-n", "--nodes", type=int, default=6)
    p.add_argument("--dir", required=True, help="directory for node-0 .. node-(N-1)")
    p.add_argument(
        "--min-peers",
        type=int,
        default=None,
        help="routing-table size every node must reach (default: min(N-1, 10))",
    )
    p.add_argument("--timeout", type=float, default=120.0)
    p = command("status", cmd_testnet_status, "show the testnet's nodes", t_commands)
    p.add_argument("--dir", required=True)
    p = command("down", cmd_testnet_down, "stop the testnet's node processes", t_commands)
    p.add_argument("--dir", required=True)

    add_file_commands(command, _file_command)
    add_market_commands(commands, common, command, _file_command, _Parser)
    add_identity_commands(commands, common, _identity_command, _Parser)

    p = command("demo", cmd_demo, "start a local testnet, put and get a record, stop it")
    p.add_argument("-n", "--nodes", type=int, default=6)
    p.add_argument("--keep", action="store_true", help="leave the testnet running")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.json = getattr(args, "json", False)
    try:
        args.data_dir = resolve_data_dir(getattr(args, "data_dir", None), os.environ)
        args.fn(args)
    except (CliError, ConfigError, ApiUnavailable) as error:
        sys.stderr.write(f"zhtp: error: {error}\n")
        return 1
    except ApiFailed as error:
        sys.stderr.write(f"zhtp: error: {error}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("zhtp: interrupted\n")
        return 130
    except BrokenPipeError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
