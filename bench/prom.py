"""Reading counters out of Meridian's Prometheus exposition (/metrics)."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

Samples = Mapping[str, float]


def sum_by_name(text: str) -> dict[str, float]:
    """Every sample's value summed over its labels, keyed by sample name.

    Counters appear under their exposed names (`meridian_egress_packets_total`);
    the `_created` timestamps are left out.
    """
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def by_label(text: str, name: str, label: str) -> dict[str, float]:
    """One sample name's values keyed by one label's value (summed over the others)."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                key = sample.labels.get(label, "")
                values[key] = values.get(key, 0.0) + sample.value
    return values


def delta(after: Samples, before: Samples, name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)
