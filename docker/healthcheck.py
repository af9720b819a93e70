"""Health check of the mktn containers (standard library only, so it runs in any stage).

Which check runs:

- ``--url URL`` (or ``$MKTN_HEALTH_URL``): GET it; healthy on a 2xx answer.
- else, when ``$PREFECT_API_URL`` is set: GET ``$PREFECT_API_URL/health`` (the Prefect
  server answers there; a worker is only useful while its API is reachable).
- else: import the project's packages and torch, which catches a broken install.

``--wait SECONDS`` retries until healthy or the time is up (the entrypoint uses it to
wait for a server on another host). Exit status 0 = healthy, 1 = not, with the reason
on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import urllib.error
import urllib.request


def check_url(url: str, timeout: float) -> str | None:
    """Return ``None`` if ``url`` answers 2xx, else the reason."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # our own URL
            if 200 <= resp.status < 300:
                return None
            return f"{url} answered HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"{url} answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{url} is not reachable: {reason}"


def check_install() -> str | None:
    """Return ``None`` if the project's packages and torch import, else the reason."""
    for name in ("storage", "pipeline", "model", "flows", "torch"):
        try:
            importlib.import_module(name)
        except Exception as exc:  # any import failure is unhealthy
            return f"cannot import {name!r}: {exc}; rebuild the image (pip install .)"
    return None


def target_url(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    if os.environ.get("MKTN_HEALTH_URL"):
        return os.environ["MKTN_HEALTH_URL"]
    api = os.environ.get("PREFECT_API_URL")
    if api:
        return api.rstrip("/") + "/health"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="URL to GET (default: $MKTN_HEALTH_URL, $PREFECT_API_URL/health)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
    parser.add_argument("--wait", type=float, default=0.0, help="retry for up to this many seconds")
    args = parser.parse_args(argv)

    url = target_url(args.url)
    deadline = time.monotonic() + max(args.wait, 0.0)
    while True:
        reason = check_url(url, args.timeout) if url else check_install()
        if reason is None:
            return 0
        if time.monotonic() >= deadline:
            print(f"unhealthy: {reason}", file=sys.stderr)
            return 1
        time.sleep(min(2.0, max(deadline - time.monotonic(), 0.0)))


if __name__ == "__main__":
    sys.exit(main())
