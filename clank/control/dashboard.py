"""The dashboard page: one self-contained HTML file (vanilla JS, no build step, no CDN).

It lives in ``static/dashboard.html`` next to this module and is read once per process.
"""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def dashboard_html() -> str:
    return (resources.files("clank.control") / "static" / "dashboard.html").read_text(encoding="utf-8")
