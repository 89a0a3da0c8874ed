#!/usr/bin/env python3
"""Fuzz the trickle path: `parse_sdpfrag`, then each candidate as PATCH adds it
(`add_remote_candidate`). An input is accepted or refused with SdpFragError or
InvalidOffer (a 400); any other exception is a crash.

    python -m fuzz.fuzz_sdpfrag fuzz/corpus/sdpfrag -max_total_time=600
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with atheris.instrument_imports(include=["relay", "server", "aiortc.sdp", "fuzz"]):
    from fuzz.common import check_sdpfrag, decoded


def test_one_input(data: bytes) -> None:
    text = decoded(data)
    if text is not None:
        check_sdpfrag(text)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
