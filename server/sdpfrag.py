"""Trickle ICE fragments (RFC 8840, `application/trickle-ice-sdpfrag`) that PATCH bodies carry."""

from __future__ import annotations

from dataclasses import dataclass, field

from relay.negotiation import MAX_SDP_LINE_LENGTH


class SdpFragError(ValueError):
    pass


@dataclass
class SdpFrag:
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    # (mid or None, "candidate:..." without the a= prefix)
    candidates: list[tuple[str | None, str]] = field(default_factory=list)
    end_of_candidates: bool = False


def parse_sdpfrag(text: str, max_lines: int = 200) -> SdpFrag:
    frag = SdpFrag()
    mid: str | None = None
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    if len(lines) > max_lines:
        raise SdpFragError(f"the fragment has {len(lines)} lines; at most {max_lines} are accepted")
    for number, line in enumerate(lines, 1):
        if len(line) > MAX_SDP_LINE_LENGTH:
            raise SdpFragError(
                f"line {number} ({line[:24]!r}...) is {len(line)} characters long; "
                f"at most {MAX_SDP_LINE_LENGTH} are accepted"
            )
        if line.startswith("m="):
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[6:]
        elif line.startswith("a=ice-ufrag:"):
            frag.ice_ufrag = line[12:]
        elif line.startswith("a=ice-pwd:"):
            frag.ice_pwd = line[10:]
        elif line.startswith("a=candidate:"):
            candidate = line[2:]
            if len(candidate.split()) < 8:
                raise SdpFragError(f"malformed candidate line {line!r}")
            frag.candidates.append((mid, candidate))
        elif line == "a=end-of-candidates":
            frag.end_of_candidates = True
        elif line[:2] not in ("a=", "m=", "c=") or len(line) < 3:
            raise SdpFragError(f"unexpected line {line!r} in an SDP fragment")
    return frag
