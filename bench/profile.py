"""Reading py-spy's raw (collapsed-stack) output: where the server's samples went.

py-spy samples the Python stacks only: time a C function spends (libsrtp's protect,
the `sendto` system call) is charged to the Python line that called it, which is
what makes the leaf *lines* worth reading, not just the functions.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<path>.*):(?P<line>\d+)\)$")
_TRIM = ("site-packages/", "/lib/python3.11/", "/work/main/")


def _short(path: str) -> str:
    for marker in _TRIM:
        if marker in path:
            return path.split(marker, 1)[1]
    return path.rsplit("/", 2)[-1] if path.count("/") > 2 else path


def _names(frame: str) -> tuple[str, str]:
    """(`function (file:line)`, `function (file)`) for one collapsed frame."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip(), frame.strip()
    path = _short(match["path"])
    return (
        f"{match['function']} ({path}:{match['line']})",
        f"{match['function']} ({path})",
    )


def summarize(raw: str, top: int = 15) -> dict[str, Any]:
    """Shares of all samples: by leaf line (self time) and by function (inclusive)."""
    leaves: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        leaves[_names(frames[-1])[0]] += count
        for function in {_names(f)[1] for f in frames}:
            inclusive[function] += count
    if not total:
        return {"samples": 0, "self": [], "inclusive": []}
    return {
        "samples": total,
        "self": [(name, count / total) for name, count in leaves.most_common(top)],
        "inclusive": [(name, count / total) for name, count in inclusive.most_common(top)],
    }
