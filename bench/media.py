"""The benchmark's studio media: a 720p30 H.264 loop dense enough for ~2.5 Mbit/s.

The demo pattern (flat colour bars, a counter) compresses to about 0.3 Mbit/s, far
below a real 720p camera feed, and the relay's cost is per packet: too few bytes
would flatter it. This loop is a coarse random texture panning across the frame
(every frame moves, keyframes are expensive) plus fine grain that differs every
frame (P-frames carry residual), which makes libx264 spend its whole budget. The
rate is then checked from the encoded packets' sizes and the target corrected, so
the loop's real mean bitrate lands within a few per cent of the one asked for.

Like the demo, it is encoded ONCE, before any timing starts, and replayed through
`clients.demo_media`'s loop tracks (aiortc only packetizes it). Audio is the demo
loop's Opus track.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from av.packet import Packet
from av.stream import Stream
from av.video.frame import PictureType, VideoFrame
from numpy.typing import NDArray

from clients.demo_media import VIDEO_CLOCK_RATE, EncodedChunk, EncodedLoop, encode_test_loop

# Texture cell size (pixels), texture contrast and per-frame grain (luma levels):
# chosen so that keyframes are about 7 times a P-frame, as with a camera, at 2.5 Mbit/s.
_CELL = 8
_CONTRAST = 20
_GRAIN = 10
_PAN = (3, 1)  # pixels per frame, x and y
_MAX_PASSES = 4
_TOLERANCE = 0.03  # relative error in the mean bitrate accepted without another pass
# aiortc's H.264 packetizer (aiortc.codecs.h264.PACKET_MAX): largest RTP payload.
_RTP_PAYLOAD_MAX = 1300


@dataclass(frozen=True, slots=True)
class VideoLoopStats:
    bitrate: float  # mean bit/s of the encoded video, from the packets' sizes
    keyframe_bytes: float  # mean size of a keyframe
    delta_frame_bytes: float  # mean size of a P-frame
    passes: int  # encodes it took to reach the target
    encoder_bitrate: int  # the bit_rate the last pass asked libx264 for


def _frames(width: int, height: int, frames: int, seed: int = 1) -> list[NDArray[np.uint8]]:
    """yuv420p images (height * 3 // 2, width): panning texture, colour ramps, grain."""
    rng = np.random.default_rng(seed)
    pan_x, pan_y = _PAN
    tex_h = (height + pan_y * frames) // _CELL + 2
    tex_w = (width + pan_x * frames) // _CELL + 2
    cells = rng.integers(-_CONTRAST, _CONTRAST + 1, size=(tex_h, tex_w)).astype(np.int16)
    texture = np.repeat(np.repeat(cells, _CELL, axis=0), _CELL, axis=1)
    ramp = np.linspace(40, 200, width).astype(np.int16)  # a brightness ramp, left to right
    cw, ch = width // 2, height // 2
    u = np.tile(np.linspace(90, 170, cw).astype(np.uint8), (ch, 1))
    v = np.tile(np.linspace(170, 90, ch).astype(np.uint8)[:, None], (1, cw))
    images: list[NDArray[np.uint8]] = []
    for index in range(frames):
        y0, x0 = index * pan_y, index * pan_x
        luma = texture[y0 : y0 + height, x0 : x0 + width] + ramp
        luma += rng.integers(-_GRAIN, _GRAIN + 1, size=(height, width), dtype=np.int16)
        image = np.empty((height * 3 // 2, width), dtype=np.uint8)
        image[:height] = np.clip(luma, 16, 235)
        # yuv420p planes as one array: U then V, each ch rows of cw, packed two per row.
        image[height:].reshape(-1)[: ch * cw] = u.reshape(-1)
        image[height:].reshape(-1)[ch * cw :] = v.reshape(-1)
        images.append(image)
    return images


def _encode(
    images: list[NDArray[np.uint8]], width: int, height: int, fps: int, bitrate: int
) -> list[tuple[bytes, bool]]:
    ctx = av.CodecContext.create("libx264", "w")
    assert isinstance(ctx, av.VideoCodecContext)
    ctx.width = width
    ctx.height = height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = Fraction(1, fps)
    ctx.framerate = Fraction(fps, 1)
    ctx.gop_size = fps
    ctx.max_b_frames = 0
    ctx.bit_rate = bitrate
    ctx.profile = "Baseline"
    kbps = bitrate // 1000
    ctx.options = {
        "preset": "ultrafast",
        "tune": "zerolatency",
        # One IDR per second exactly, SPS/PPS before each (as the demo loop, which the
        # loop tracks' replay relies on); ipratio=1 keeps keyframes camera-like in size.
        "x264-params": (
            f"keyint={fps}:min-keyint={fps}:scenecut=0:bframes=0:repeat-headers=1:"
            f"ipratio=1.0:vbv-maxrate={kbps}:vbv-bufsize={kbps}"
        ),
    }
    packets: list[Packet[Stream]] = []
    for index, image in enumerate(images):
        frame = VideoFrame.from_ndarray(image, format="yuv420p")
        frame.pts = index
        frame.time_base = Fraction(1, fps)
        if index % fps == 0:
            frame.pict_type = PictureType.I
        packets.extend(ctx.encode(frame))
    packets.extend(ctx.encode(None))
    if len(packets) != len(images):
        raise RuntimeError(f"libx264 gave {len(packets)} packets for {len(images)} frames")
    encoded: list[tuple[bytes, bool]] = []
    for index, packet in enumerate(packets):
        keyframe = bool(packet.is_keyframe)
        if packet.pts != index or keyframe != (index % fps == 0):
            raise RuntimeError(f"libx264 reordered frames or misplaced a keyframe at {index}")
        encoded.append((bytes(packet), keyframe))
    return encoded


def encode_bench_loop(
    width: int = 1280,
    height: int = 720,
    fps: int = 30,
    seconds: int = 4,
    bitrate: int = 2_500_000,
) -> tuple[EncodedLoop, VideoLoopStats]:
    """Encode the benchmark loop once: dense H.264 video at `bitrate`, the demo's Opus."""
    if 90_000 % fps:
        raise ValueError(f"fps must divide 90000, got {fps}")
    started = time.perf_counter()
    frames = seconds * fps
    images = _frames(width, height, frames)
    asked = bitrate
    passes = 0
    while True:
        passes += 1
        encoded = _encode(images, width, height, fps, asked)
        measured = sum(len(data) for data, _ in encoded) * 8 / seconds
        if abs(measured / bitrate - 1) <= _TOLERANCE or passes == _MAX_PASSES:
            break
        asked = round(asked * bitrate / measured)
    step = VIDEO_CLOCK_RATE // fps
    video = tuple(
        EncodedChunk(data, index * step, step, keyframe)
        for index, (data, keyframe) in enumerate(encoded)
    )
    # The demo loop supplies the Opus track; its (tiny) video is thrown away.
    audio_loop = encode_test_loop(width=64, height=64, fps=fps, seconds=seconds)
    loop = EncodedLoop(
        codec="h264",
        width=width,
        height=height,
        fps=fps,
        seconds=seconds,
        video=video,
        audio=audio_loop.audio,
        encode_seconds=time.perf_counter() - started,
    )
    keyframes = [len(c.data) for c in video if c.keyframe]
    deltas = [len(c.data) for c in video if not c.keyframe]
    stats = VideoLoopStats(
        bitrate=loop.video_bitrate,
        keyframe_bytes=sum(keyframes) / len(keyframes),
        delta_frame_bytes=sum(deltas) / len(deltas) if deltas else 0.0,
        passes=passes,
        encoder_bitrate=asked,
    )
    return loop, stats


def rtp_packets_per_second(loop: EncodedLoop) -> float:
    """Roughly the RTP packets/s the loop makes through aiortc's packetizers.

    Video: each frame's NAL units are split into payloads of at most 1300 bytes
    (small ones aggregated); audio: one packet per 20 ms Opus frame. The exact count
    is read from the server's ingest counters during the run.
    """
    video = sum(-(-len(c.data) // _RTP_PAYLOAD_MAX) for c in loop.video)
    return (video + len(loop.audio)) / loop.seconds
