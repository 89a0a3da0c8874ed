"""The demo studio's loop: encoded right, replayed with sane timestamps, playable over WebRTC."""

from __future__ import annotations

import asyncio
import functools
from fractions import Fraction

import av
import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.opus import OpusEncoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.mediastreams import MediaStreamError
from av.audio.frame import AudioFrame
from av.packet import Packet
from av.stream import Stream
from av.video.frame import VideoFrame
from numpy.typing import NDArray

from clients.demo_media import (
    AUDIO_CLOCK_RATE,
    AUDIO_PACKET_SAMPLES,
    VIDEO_CLOCK_RATE,
    EncodedLoop,
    LoopAudioTrack,
    LoopVideoTrack,
    VideoCodec,
    add_loop_tracks,
    encode_test_loop,
    read_frame_counter,
)


@functools.cache
def _loop(codec: VideoCodec = "h264", width: int = 640, height: int = 360) -> EncodedLoop:
    """Each loop is encoded once per test session."""
    return encode_test_loop(width=width, height=height, fps=30, seconds=4.0, codec=codec)


class FakeClock:
    """A monotonic clock that sleep() advances, so pacing costs no real time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def _decode_video(loop: EncodedLoop) -> list[VideoFrame]:
    decoder = av.CodecContext.create(loop.codec, "r")
    assert isinstance(decoder, av.VideoCodecContext)
    frames: list[VideoFrame] = []
    for chunk in loop.video:
        frames.extend(decoder.decode(av.Packet(chunk.data)))
    frames.extend(decoder.decode(None))
    return frames


def _pts(packet: Packet[Stream]) -> int:
    assert packet.pts is not None
    return packet.pts


def _nal_types(annex_b: bytes) -> list[int]:
    types = []
    i = annex_b.find(b"\x00\x00\x01")
    while i != -1:
        types.append(annex_b[i + 3] & 0x1F)
        i = annex_b.find(b"\x00\x00\x01", i + 3)
    return types


# ------------------------------------------------------------------ encoding


@pytest.mark.parametrize("codec", ["h264", "vp8"])
def test_loop_has_whole_gops_and_keyframe_every_second(codec: VideoCodec) -> None:
    loop = _loop(codec)
    assert (loop.width, loop.height, loop.fps, loop.seconds) == (640, 360, 30, 4)
    assert loop.frame_count == 4 * 30
    assert loop.video[0].keyframe
    assert [i for i, c in enumerate(loop.video) if c.keyframe] == [0, 30, 60, 90]
    assert [c.pts for c in loop.video] == [i * 3000 for i in range(120)]
    assert sum(c.duration for c in loop.video) == loop.video_loop_ticks == 4 * VIDEO_CLOCK_RATE
    assert 0 < loop.video_bitrate < 2_000_000
    print(f"{codec}: encode_test_loop took {loop.encode_seconds:.3f} s")


def test_audio_is_20ms_opus_packets_covering_the_loop() -> None:
    loop = _loop()
    assert len(loop.audio) == 4 * 50
    assert [c.pts for c in loop.audio] == [i * AUDIO_PACKET_SAMPLES for i in range(200)]
    assert sum(c.duration for c in loop.audio) == loop.audio_loop_ticks == 4 * AUDIO_CLOCK_RATE
    assert 32_000 < loop.audio_bitrate < 100_000


def test_seconds_round_to_whole_gops() -> None:
    loop = encode_test_loop(width=64, height=48, fps=10, seconds=1.4, codec="h264")
    assert loop.seconds == 1
    assert loop.frame_count == 10
    assert [c.keyframe for c in loop.video] == [True] + [False] * 9
    assert len(loop.audio) == 50


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 641}, "even"),
        ({"height": 16}, ">= 32"),
        ({"codec": "av1"}, "codec"),
        ({"fps": 0}, "fps"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_test_loop(**kwargs)  # type: ignore[arg-type]


def test_h264_is_constrained_baseline_annex_b_with_parameter_sets_at_each_idr() -> None:
    loop = _loop("h264")
    for index, chunk in enumerate(loop.video):
        assert chunk.data.startswith(b"\x00\x00\x00\x01") or chunk.data.startswith(b"\x00\x00\x01")
        types = _nal_types(chunk.data)
        if chunk.keyframe:
            assert {7, 8, 5} <= set(types), (index, types)
        else:
            assert 5 not in types and 7 not in types, (index, types)
    first = loop.video[0].data
    sps = first[first.find(b"\x00\x00\x01\x67") + 3 :]
    profile_idc, constraints = sps[1], sps[2]
    assert profile_idc == 66  # baseline
    assert constraints & 0x40  # constraint_set1: constrained baseline, what browsers negotiate


@pytest.mark.parametrize(
    ("codec", "width", "height"),
    # 160x90: half the height is odd, so chroma planes do not start on a row boundary.
    [("h264", 640, 360), ("vp8", 320, 180), ("h264", 160, 90)],
)
def test_decoded_frames_have_the_size_and_show_their_counter(
    codec: VideoCodec, width: int, height: int
) -> None:
    loop = _loop(codec, width, height)
    frames = _decode_video(loop)
    assert len(frames) == loop.frame_count
    assert {(f.width, f.height) for f in frames} == {(width, height)}
    assert [read_frame_counter(f) for f in frames] == list(range(loop.frame_count))


def test_counter_reads_from_a_scaled_copy_and_not_from_other_pictures() -> None:
    frames = _decode_video(_loop("h264"))
    assert read_frame_counter(frames[87].reformat(width=320, height=180)) == 87
    assert read_frame_counter(frames[87].reformat(format="rgb24")) == 87
    black = np.full((360, 640), 16, dtype=np.uint8)
    assert read_frame_counter(black) is None


def test_beep_starts_each_second_in_the_decoded_audio() -> None:
    """The 1 kHz beep opens each second, as the video's flash does: lip sync is visible."""
    loop = _loop()
    decoder = av.CodecContext.create("opus", "r")
    assert isinstance(decoder, av.AudioCodecContext)
    left: list[NDArray[np.float64]] = []
    for chunk in loop.audio:
        for frame in decoder.decode(av.Packet(chunk.data)):
            assert frame.format.name == "fltp"  # planar float: row 0 is the left channel
            left.append(frame.to_ndarray()[0].astype(np.float64))
    pcm = np.concatenate(left)
    assert len(pcm) == loop.audio_loop_ticks

    def rms(start_ms: float, end_ms: float) -> float:
        window = pcm[round(start_ms * 48) : round(end_ms * 48)]
        return float(np.sqrt(np.mean(window**2)))

    for second in range(loop.seconds):
        at = second * 1000
        beep, tone = rms(at + 10, at + 90), rms(at + 150, at + 950)
        assert 0.05 < tone < 0.1, (second, tone)  # the quiet 440 Hz tone at -20 dBFS
        assert beep > 4 * tone, (second, beep, tone)
        # Aligned to the millisecond: libopus's 6.5 ms look-ahead is compensated for.
        assert rms(at + 1, at + 5) > 2 * tone, second  # fading in already
        if second:
            assert rms(at - 10, at - 1) < 1.5 * tone, second  # and not a moment before


# ------------------------------------------------------------------ replaying


@pytest.mark.parametrize("codec", ["h264", "vp8"])
def test_video_pts_and_rtp_timestamps_increase_across_loops(codec: VideoCodec) -> None:
    loop = _loop(codec)
    clock = FakeClock()
    track = LoopVideoTrack(loop, clock=clock, sleep=clock.sleep)
    encoder = H264Encoder() if codec == "h264" else Vp8Encoder()

    async def drive() -> list[Packet[Stream]]:
        return [await track.recv() for _ in range(2 * loop.frame_count + 5)]

    packets = asyncio.run(drive())
    pts = [_pts(p) for p in packets]
    assert pts == [i * 3000 for i in range(len(packets))]
    assert all(p.time_base == Fraction(1, VIDEO_CLOCK_RATE) for p in packets)
    assert [p.is_keyframe for p in packets] == [i % 30 == 0 for i in range(len(packets))]
    # What RTCRtpSender does with a packet: pack() gives the RTP timestamp offset.
    timestamps = [encoder.pack(p)[1] for p in packets]
    assert timestamps == pts
    # The loop's seam: frame 0 of the second pass follows the last frame of the first.
    assert bytes(packets[loop.frame_count]) == loop.video[0].data
    assert pts[loop.frame_count] == pts[loop.frame_count - 1] + 3000
    # Real-time pacing: the last packet was due (n - 1) frame intervals after the first.
    assert clock.now - 1000.0 == pytest.approx((len(packets) - 1) / 30)
    assert track.packets_sent == len(packets)


def test_audio_pts_and_rtp_timestamps_increase_across_loops() -> None:
    loop = _loop()
    clock = FakeClock()
    track = LoopAudioTrack(loop, clock=clock, sleep=clock.sleep)
    encoder = OpusEncoder()

    async def drive() -> list[Packet[Stream]]:
        return [await track.recv() for _ in range(2 * len(loop.audio) + 5)]

    packets = asyncio.run(drive())
    pts = [_pts(p) for p in packets]
    assert pts == [i * AUDIO_PACKET_SAMPLES for i in range(len(packets))]
    assert all(p.time_base == Fraction(1, AUDIO_CLOCK_RATE) for p in packets)
    assert [encoder.pack(p)[1] for p in packets] == pts
    assert clock.now - 1000.0 == pytest.approx((len(packets) - 1) * 0.020)


def test_stall_reanchors_instead_of_bursting() -> None:
    clock = FakeClock()
    track = LoopVideoTrack(_loop(), clock=clock, sleep=clock.sleep, max_lag=0.5)

    async def drive() -> None:
        await track.recv()
        await track.recv()
        clock.now += 10.0  # the event loop was frozen for ten seconds
        clock.sleeps.clear()
        stalled = await track.recv()
        assert clock.sleeps == []  # late: sent at once ...
        following = await track.recv()
        assert clock.sleeps == [pytest.approx(1 / 30)]  # ... then paced again, no burst
        assert _pts(following) == _pts(stalled) + 3000  # timestamps stay continuous

    asyncio.run(drive())


def test_stopped_track_ends() -> None:
    track = LoopAudioTrack(_loop())
    track.stop()
    with pytest.raises(MediaStreamError):
        asyncio.run(track.recv())


# ------------------------------------------------------------------ over WebRTC


async def _loopback(
    loop: EncodedLoop, offerer: str
) -> tuple[list[VideoFrame], list[AudioFrame], str]:
    sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    receiver = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    received: dict[str, MediaStreamTrack] = {}
    both = asyncio.Event()

    @receiver.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        received[track.kind] = track
        if len(received) == 2:
            both.set()

    try:
        add_loop_tracks(sender, loop)
        if offerer == "sender":  # how the demo studio publishes: a WHIP client offers
            await sender.setLocalDescription(await sender.createOffer())
            await receiver.setRemoteDescription(sender.localDescription)
            await receiver.setLocalDescription(await receiver.createAnswer())
            await sender.setRemoteDescription(receiver.localDescription)
            answer = receiver.localDescription.sdp
        else:  # the receiver offers VP8 first (aiortc's default): the loop's codec must win
            for kind in ("video", "audio"):
                receiver.addTransceiver(kind, direction="recvonly")
            await receiver.setLocalDescription(await receiver.createOffer())
            await sender.setRemoteDescription(receiver.localDescription)
            await sender.setLocalDescription(await sender.createAnswer())
            await receiver.setRemoteDescription(sender.localDescription)
            answer = sender.localDescription.sdp

        async def collect() -> tuple[list[VideoFrame], list[AudioFrame]]:
            await both.wait()
            video: list[VideoFrame] = []
            audio: list[AudioFrame] = []
            while len(video) < 10:
                frame = await received["video"].recv()
                assert isinstance(frame, VideoFrame)
                video.append(frame)
            while len(audio) < 10:
                sound = await received["audio"].recv()
                assert isinstance(sound, AudioFrame)
                audio.append(sound)
            return video, audio

        video, audio = await asyncio.wait_for(collect(), timeout=20)
        return video, audio, answer
    finally:
        await sender.close()
        await receiver.close()


@pytest.mark.parametrize(
    ("codec", "offerer"), [("h264", "sender"), ("vp8", "sender"), ("h264", "receiver")]
)
def test_loop_tracks_play_over_a_real_peer_connection(codec: VideoCodec, offerer: str) -> None:
    loop = _loop(codec, 320, 180)
    video, audio, answer = asyncio.run(_loopback(loop, offerer))

    video_section = answer[answer.index("m=video") :]
    first_payload_type = video_section.split("\r\n")[0].split()[3]
    assert f"a=rtpmap:{first_payload_type} {loop.mime_type.split('/')[1]}/90000" in answer

    assert {(f.width, f.height) for f in video} == {(320, 180)}
    counters = [read_frame_counter(f) for f in video]
    readable = [c for c in counters if c is not None]
    assert readable == counters, counters
    assert readable == sorted(set(readable)), counters  # each frame newer than the last
    assert {f.sample_rate for f in audio} == {AUDIO_CLOCK_RATE}
