"""A node's URL as it may be shown: in errors, logs, metrics labels and `wallet stack status`.

Its own module, without the transport's HTTP client, so the CLI can show URLs without loading it.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def display_url(url: str) -> str:
    """The node's URL as safe to show anywhere: scheme://host:port, nothing else (a path, a query
    or user info may hold an API key or a password)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if parts.port is not None:
            host += f":{parts.port}"
    except ValueError:
        return "<invalid url>"
    if not parts.scheme or not host:
        return "<invalid url>"
    return f"{parts.scheme}://{host}"
