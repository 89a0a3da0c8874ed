"""The aiortc/aioice internals the relay depends on are where it expects them."""

from __future__ import annotations

import aiortc
import pytest
from aiortc import RTCRtpSender

from relay import rtc_internals


def test_every_internal_the_relay_uses_is_present() -> None:
    rtc_internals.check_internals()  # raises InternalsMoved, naming each one that moved


def test_a_moved_internal_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(aiortc.RTCRtpReceiver, "_send_rtcp_pli")
    monkeypatch.setattr(aiortc, "__version__", "9.9.9")
    with pytest.raises(rtc_internals.InternalsMoved) as raised:
        rtc_internals.check_internals()
    assert "_send_rtcp_pli" in str(raised.value)
    assert "9.9.9" in str(raised.value)


def test_forwarded_h264_profiles_can_be_negotiated() -> None:
    rtc_internals.register_forwarded_codecs()
    rtc_internals.register_forwarded_codecs()  # idempotent
    profiles = [
        c.parameters.get("profile-level-id")
        for c in RTCRtpSender.getCapabilities("video").codecs
        if c.mimeType == "video/H264"
    ]
    assert profiles == ["42001f", "42e01f", "4d001f", "640c1f"]
