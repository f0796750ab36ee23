"""The dev stack's Prometheus during a catch-up: it scrapes the stack's exporter, the scan lag and
the outbox's age rise while the block worker is stopped and Kafka paused, and fall back to 0 once
both are back; a headless Chromium screenshots the graphs (the README shows such a picture).

Set WALLET_SCREENSHOT_DIR to keep the screenshots (the README's pictures are made this way)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from tests.chain_helpers import Chain
from workers.devstack import Stack, wait_for
from workers.prometheus import graph_url

LAG = 'wallet_scan_lag_blocks{chain_id="31337"}'
OUTBOX_AGE = "wallet_outbox_oldest_age_seconds"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _api(port: int, path: str, **params: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def _now_value(port: int, query: str) -> float | None:
    result = _api(port, "query", query=query)
    return float(result[0]["value"][1]) if result else None


def _screenshot(url: str, out: Path) -> None:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    done = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1100,780", "--virtual-time-budget=8000", f"--screenshot={out}", url],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and out.exists(), done.stderr[-2000:]


def test_prometheus_shows_scan_lag_and_outbox_age_rise_and_fall_during_a_catch_up(
        stack: Stack, chain: Chain, new_address, tmp_path: Path) -> None:
    port = stack.config.ports["prometheus"]
    wait_for(lambda: _now_value(port, 'up{job="wallet"}') == 1, 60, "Prometheus scraping the exporter")
    wait_for(lambda: _now_value(port, LAG) == 0 and _now_value(port, OUTBOX_AGE) == 0, 90,
             "no lag and an empty outbox, as Prometheus sees them")
    started = time.time()
    # Behind: no block worker scans, and Kafka takes nothing, while blocks and events keep coming.
    stack.stop("worker")
    stack.send_signal("kafka", signal.SIGSTOP)
    try:
        chain.mine(30)
        for _ in range(3):
            new_address()  # address.created events wait in the outbox
        wait_for(lambda: (_now_value(port, LAG) or 0) >= 20 and (_now_value(port, OUTBOX_AGE) or 0) >= 3, 90,
                 "Prometheus seeing the lag and the outbox's age grow")
    finally:
        stack.send_signal("kafka", signal.SIGCONT)
        stack.start(["worker"])
    wait_for(lambda: _now_value(port, LAG) == 0 and _now_value(port, OUTBOX_AGE) == 0, 120,
             "Prometheus seeing the catch-up end")
    ended = time.time()

    # What was recorded: each series rose and came back to 0 within the run.
    for query, least in ((LAG, 20), (OUTBOX_AGE, 3)):
        [series] = _api(port, "query_range", query=query, start=f"{started - 5:.0f}", end=f"{ended + 2:.0f}",
                        step="1")
        values = [float(v) for _, v in series["values"]]
        assert max(values) >= least and values[-1] == 0, (query, values)

    out_dir = Path(os.environ.get("WALLET_SCREENSHOT_DIR") or tmp_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = uuid.uuid4().hex[:6]
    for name, query in (("scan-lag", LAG), ("outbox-age", OUTBOX_AGE)):
        shot = out_dir / f"prometheus-{name}-{run}.png"
        # One graph per page: with two, the UI scrolls to the second one's input.
        _screenshot(graph_url(stack.config.bind_host, port, query, range_input="1m"), shot)
        data = shot.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 20_000  # a rendered page, not a blank one
