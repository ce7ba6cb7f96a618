"""Reading a Prometheus text endpoint in tests: ``scrape(port)`` -> {'name{labels}': value}."""

from __future__ import annotations

import urllib.request


def scrape(port: int, timeout: float = 5.0) -> dict[str, float]:
    """``http://127.0.0.1:PORT/metrics`` as {'name{labels}': value} (comment lines dropped)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out
