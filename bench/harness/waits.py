"""Bounded waits: one polling loop for every "wait until the service / the round / the file is there"."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.2,
    *,
    what: str = "condition",
    describe: Callable[[], object] | None = None,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something truthy, and return that.

    It is always called at least once, and once more when ``timeout`` has passed. An exception of a type
    in ``retry_on`` counts as "not yet" (the last one is reported); any other propagates. On timeout:
    ``TimeoutError`` naming ``what``, the last retried exception and ``describe()`` (state worth seeing:
    a log tail, a row's progress), evaluated then."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
        except retry_on as exc:
            value, last_error = None, exc
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(_timeout_message(timeout, what, last_error, describe))
        time.sleep(interval)


def _timeout_message(timeout: float, what: str, error: BaseException | None, describe) -> str:
    lines = [f"timed out after {timeout:g} s waiting for {what}"]
    if error is not None:
        lines.append(f"last error: {error!r}")
    if describe is not None:
        try:
            lines.append(str(describe()))
        except Exception as exc:  # the timeout is the error to report
            lines.append(f"(describing the state failed: {exc!r})")
    return "\n".join(lines)


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """``GET url`` answers 200."""
    import requests

    try:
        return requests.get(url, timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def http_answers(url: str, timeout: float = 10.0) -> bool:
    """``GET url`` gets any HTTP answer (redirects not followed): the server is up, healthy or not."""
    import requests

    try:
        requests.get(url, timeout=timeout, allow_redirects=False)
        return True
    except requests.RequestException:
        return False
