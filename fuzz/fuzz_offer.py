#!/usr/bin/env python3
"""Fuzz the SDP offer path: `parse_offer`, then `require_relayable_codecs` (WHIP) and
`require_viewer_codecs` (WHEP). An input is accepted or refused with an OfferRejected
(a 4xx); any other exception is a crash.

    python -m fuzz.fuzz_offer fuzz/corpus/offer -max_total_time=600
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with atheris.instrument_imports(include=["relay", "server", "aiortc.sdp", "fuzz"]):
    from fuzz.common import check_offer, decoded


def test_one_input(data: bytes) -> None:
    text = decoded(data)
    if text is not None:
        check_offer(text)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
