"""Prometheus text exposition of a node's counters and gauges."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from node.service import NodeService


class _NodeCollector(Collector):
    def __init__(self, node: NodeService) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        events = CounterMetricFamily(
            "zhtp_protocol_events",
            "Protocol events by protocol and reason",
            labels=["protocol", "event"],
        )
        for protocol, counters in node.counters.items():
            for event, count in sorted(counters.snapshot().items()):
                events.add_metric([protocol, event], count)
        yield events
        yield GaugeMetricFamily(
            "zhtp_routing_table_peers", "Peers in the routing table", value=len(node.dht.table)
        )
        yield GaugeMetricFamily(
            "zhtp_dht_records", "DHT records held locally", value=node.store.count()
        )
        yield GaugeMetricFamily(
            "zhtp_dht_provider_entries", "Provider entries held", value=node.store.provider_count()
        )
        yield GaugeMetricFamily(
            "zhtp_connected_peers",
            "Open libp2p connections",
            value=len(node.host.get_connected_peers()),
        )


def render_metrics(node: NodeService) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_NodeCollector(node))
    return generate_latest(registry)
