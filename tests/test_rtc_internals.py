"""The aiortc/aioice internals the relay depends on are where it expects them."""

from __future__ import annotations

import aiortc
import pylibsrtp
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


def srtp_session(key: bytes) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(
        key=key,
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    )
    return pylibsrtp.Session(policy)


def test_fast_protect_gives_what_pylibsrtp_gives() -> None:
    key = bytes(range(28))
    reference, fast = srtp_session(key), rtc_internals.fast_protect(srtp_session(key))
    for sequence_number in range(5):
        packet = bytes([0x80, 96]) + sequence_number.to_bytes(2, "big") + bytes(8) + bytes(1000)
        assert fast(packet) == reference.protect(packet)
    with pytest.raises(ValueError):
        fast(bytes([0x80, 96]) + bytes(1490))
