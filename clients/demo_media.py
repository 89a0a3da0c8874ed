"""The demo studio's media: a test loop encoded once at start-up, then replayed forever.

Why: Meridian's built-in demo studio publishes whenever the relay runs, so that a
newcomer who opens a viewer sees a live stream at once, before wiring up a camera or
OBS. It must therefore cost almost nothing while it publishes. Encoding video live
would keep a CPU core busy for as long as the relay is up, so the loop is encoded
ONCE (about 0.2 s for 640x360, 4 s, with libx264 ``ultrafast``) and the tracks hand
the same packets to aiortc again and again: when a track's ``recv()`` returns an
``av.Packet`` rather than a frame, ``RTCRtpSender`` skips its encoder and only calls
the codec's ``pack()`` (RTP packetization), which is cheap (tens of milliseconds of
CPU per minute of media).

What the loop shows and plays:

* colour bars over a grey ramp, with an orange square gliding to and fro;
* a LARGE seven-segment frame counter (the frame's index in the loop), drawn with
  numpy, no font files; :func:`read_frame_counter` reads it back from a decoded
  frame, which lets tests and benchmarks check what arrived (order, loss, freezes);
* a text-free time-of-loop bar along the bottom, with a tick at every second;
* a white flash in the top-right corner during the first 100 ms of each second, in
  step with a 1 kHz beep over a quiet 440 Hz tone, so lip sync can be judged by eye.

Constraints that make replaying safe:

* the loop is a whole number of seconds and the keyframe interval is one second
  (``g = fps``), so the loop is a whole number of GOPs and starts with a keyframe:
  replay jumps from the end back to a keyframe, which every decoder accepts;
* H.264 is constrained baseline, no B-frames, annex-B with SPS/PPS in front of every
  IDR (what aiortc's ``H264Encoder.pack()`` splits on start codes); VP8 is libvpx in
  realtime mode without alt-ref frames (one packet per shown frame);
* audio is Opus, 48 kHz stereo, 20 ms packets; the signal is periodic in the loop and
  the packets are taken from a second, warmed-up pass of the encoder, so the seam is
  inaudible;
* replayed packets carry ``pts = loop_index * loop_ticks + pts_in_loop`` in the RTP
  clock itself (``1/90000`` for video, ``1/48000`` for audio), so ``pack()``'s
  ``convert_timebase`` is the identity and RTP timestamps never jump back.

What a pre-encoded track cannot do: honour a keyframe request (PLI/FIR) or adapt its
bitrate to congestion feedback. A viewer that joins or loses packets waits at most one
second for the next keyframe; the bitrate is what the loop was encoded at (1.5 Mbit/s
is the target and the VBV cap, but the synthetic picture needs far less: about
0.3 Mbit/s at 640x360, at over 50 dB PSNR). Also, the codec the
peer connection negotiates MUST be the loop's codec (``pack()`` does not transcode):
use :func:`add_loop_tracks` or :func:`prefer_codec`, since aiortc offers VP8 first.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Final, Literal

import av
import numpy as np
from aiortc import RTCPeerConnection, RTCRtpSender, RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.audio.frame import AudioFrame
from av.packet import Packet
from av.stream import Stream
from av.video.frame import PictureType, VideoFrame
from numpy.typing import NDArray

__all__ = [
    "AUDIO_CLOCK_RATE",
    "AUDIO_PACKET_SAMPLES",
    "COUNTER_DIGITS",
    "VIDEO_CLOCK_RATE",
    "EncodedChunk",
    "EncodedLoop",
    "LoopAudioTrack",
    "LoopVideoTrack",
    "VideoCodec",
    "add_loop_tracks",
    "encode_test_loop",
    "prefer_codec",
    "read_frame_counter",
]

VideoCodec = Literal["h264", "vp8"]
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

VIDEO_CLOCK_RATE: Final = 90_000
AUDIO_CLOCK_RATE: Final = 48_000
AUDIO_PACKET_SAMPLES: Final = 960  # 20 ms at 48 kHz, what aiortc's own Opus encoder sends
COUNTER_DIGITS: Final = 4

VIDEO_BITRATE: Final = 1_500_000
AUDIO_BITRATE: Final = 64_000
# libopus's look-ahead at 48 kHz (2.5 ms + 4 ms): decoded sound lags input by this much.
# Corrected for below so that the beep starts exactly with the second's first frame.
_OPUS_PRESKIP_GUESS: Final = 312

# Limited-range ("TV") BT.601 levels.
_Y_BLACK: Final = 16
_Y_WHITE: Final = 235
_Y_THRESHOLD: Final = (_Y_BLACK + _Y_WHITE) / 2

Yuv = tuple[int, int, int]
Planes = tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8]]
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive), in luma pixels


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, slots=True)
class EncodedChunk:
    """One encoded video frame or audio packet of the loop.

    ``pts`` and ``duration`` count ticks of the RTP clock (90 kHz for video, 48 kHz for
    audio) from the start of the loop. Bytes, not ``av.Packet``: the chunks are shared
    by every track replaying the loop, and each ``recv()`` wraps them in a new packet
    with its own pts.
    """

    data: bytes
    pts: int
    duration: int
    keyframe: bool

    def packet(self, pts: int, time_base: Fraction) -> Packet[Stream]:
        """This chunk as a new packet at `pts`, ready for an aiortc sender's encoder."""
        packet = Packet(self.data)
        packet.pts = pts
        packet.dts = pts
        packet.time_base = time_base
        packet.duration = self.duration
        packet.is_keyframe = self.keyframe
        return packet


@dataclass(frozen=True, slots=True)
class EncodedLoop:
    """A test loop encoded once, ready to be replayed by LoopVideoTrack/LoopAudioTrack."""

    codec: VideoCodec
    width: int
    height: int
    fps: int
    seconds: int  # loop length; video and audio loops are exactly this long
    video: tuple[EncodedChunk, ...]
    audio: tuple[EncodedChunk, ...]
    encode_seconds: float  # wall time encode_test_loop took

    @property
    def frame_count(self) -> int:
        return len(self.video)

    @property
    def video_time_base(self) -> Fraction:
        return Fraction(1, VIDEO_CLOCK_RATE)

    @property
    def audio_time_base(self) -> Fraction:
        return Fraction(1, AUDIO_CLOCK_RATE)

    @property
    def video_loop_ticks(self) -> int:
        return self.seconds * VIDEO_CLOCK_RATE

    @property
    def audio_loop_ticks(self) -> int:
        return self.seconds * AUDIO_CLOCK_RATE

    @property
    def mime_type(self) -> str:
        return "video/H264" if self.codec == "h264" else "video/VP8"

    @property
    def video_bitrate(self) -> float:
        """Mean video bitrate of the loop in bit/s."""
        return sum(len(c.data) for c in self.video) * 8 / self.seconds

    @property
    def audio_bitrate(self) -> float:
        """Mean audio bitrate of the loop in bit/s."""
        return sum(len(c.data) for c in self.audio) * 8 / self.seconds


# ------------------------------------------------------------- seven-segment counter

# Segments a..g: top, top right, bottom right, bottom, bottom left, top left, middle.
_DIGIT_SEGMENTS: Final[dict[int, str]] = {
    0: "abcdef",
    1: "bc",
    2: "abdeg",
    3: "abcdg",
    4: "bcfg",
    5: "acdfg",
    6: "acdefg",
    7: "abc",
    8: "abcdefg",
    9: "abcdfg",
}
_SEGMENT_DIGITS: Final[dict[frozenset[str], int]] = {
    frozenset(segs): digit for digit, segs in _DIGIT_SEGMENTS.items()
}
_SEGMENT_NAMES: Final = "abcdefg"

# Geometry in units of the digit height h.
_DIGIT_W: Final = 0.5
_SEG_T: Final = 0.12
_DIGIT_GAP: Final = 0.18
_PANEL_PAD: Final = 0.12


@dataclass(frozen=True, slots=True)
class _CounterLayout:
    panel: Box
    segments: tuple[dict[str, Box], ...]  # one per digit, most significant first


def _counter_layout(width: int, height: int) -> _CounterLayout:
    """Where the counter sits; proportional to the frame, so a scaled copy reads too."""
    panel_w_units = COUNTER_DIGITS * _DIGIT_W + (COUNTER_DIGITS - 1) * _DIGIT_GAP + 2 * _PANEL_PAD
    panel_h_units = 1 + 2 * _PANEL_PAD
    h = min(0.9 * width / panel_w_units, 0.5 * height / panel_h_units)
    panel_w, panel_h = panel_w_units * h, panel_h_units * h
    px0 = (width - panel_w) / 2
    py0 = 0.38 * height - panel_h / 2
    panel = (round(px0), round(py0), round(px0 + panel_w), round(py0 + panel_h))

    w, t = _DIGIT_W * h, _SEG_T * h
    segments: list[dict[str, Box]] = []
    for i in range(COUNTER_DIGITS):
        x0 = px0 + (_PANEL_PAD + i * (_DIGIT_W + _DIGIT_GAP)) * h
        y0 = py0 + _PANEL_PAD * h
        mid = y0 + h / 2
        rel = {
            "a": (x0 + t, y0, x0 + w - t, y0 + t),
            "b": (x0 + w - t, y0 + t, x0 + w, mid - t / 2),
            "c": (x0 + w - t, mid + t / 2, x0 + w, y0 + h - t),
            "d": (x0 + t, y0 + h - t, x0 + w - t, y0 + h),
            "e": (x0, mid + t / 2, x0 + t, y0 + h - t),
            "f": (x0, y0 + t, x0 + t, mid - t / 2),
            "g": (x0 + t, mid - t / 2, x0 + w - t, mid + t / 2),
        }
        segments.append(
            {
                name: (round(bx0), round(by0), round(bx1), round(by1))
                for name, (bx0, by0, bx1, by1) in rel.items()
            }
        )
    return _CounterLayout(panel=panel, segments=tuple(segments))


def _inner(box: Box) -> Box:
    """The middle of a segment, away from its edges and neighbours' corners."""
    x0, y0, x1, y1 = box
    mx, my = max(1, (x1 - x0) // 4), max(1, (y1 - y0) // 4)
    return x0 + mx, y0 + my, max(x0 + mx + 1, x1 - mx), max(y0 + my + 1, y1 - my)


def read_frame_counter(image: VideoFrame | NDArray[np.uint8]) -> int | None:
    """Read the seven-segment frame counter back from a decoded frame.

    ``image`` is a decoded ``VideoFrame`` (any pixel format, any size with the loop's
    aspect ratio) or a 2-D luma array. Returns the frame's index in the loop, or None
    when a digit is not readable (not a demo-loop frame, or too damaged).
    """
    if isinstance(image, VideoFrame):
        frame = image if image.format.name == "yuv420p" else image.reformat(format="yuv420p")
        luma = np.asarray(frame.to_ndarray())[: frame.height]
    else:
        luma = image
    if luma.ndim != 2:
        raise ValueError(f"expected a 2-D luma array, got shape {luma.shape}")
    height, width = luma.shape
    value = 0
    for digit_boxes in _counter_layout(width, height).segments:
        lit = set()
        for name, box in digit_boxes.items():
            x0, y0, x1, y1 = _inner(box)
            if float(luma[y0:y1, x0:x1].mean()) > _Y_THRESHOLD:
                lit.add(name)
        digit = _SEGMENT_DIGITS.get(frozenset(lit))
        if digit is None:
            return None
        value = value * 10 + digit
    return value


# ------------------------------------------------------------------- the picture


def _rgb_to_yuv(r: int, g: int, b: int) -> Yuv:
    """8-bit RGB to limited-range BT.601 Y'CbCr."""
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return round(y), round(u), round(v)


_BLACK: Final = _rgb_to_yuv(0, 0, 0)
_WHITE: Final = _rgb_to_yuv(255, 255, 255)
_DARK_GREY: Final = _rgb_to_yuv(48, 48, 48)
_ORANGE: Final = _rgb_to_yuv(255, 140, 0)
_BARS: Final = tuple(
    _rgb_to_yuv(*rgb)
    for rgb in (
        (191, 191, 191),  # 75 % white, yellow, cyan, green, magenta, red, blue
        (191, 191, 0),
        (0, 191, 191),
        (0, 191, 0),
        (191, 0, 191),
        (191, 0, 0),
        (0, 0, 191),
    )
)


def _planes(image: NDArray[np.uint8], width: int, height: int) -> Planes:
    """Views of the Y, U and V planes in PyAV's (height * 3 // 2, width) yuv420p array.

    The chroma planes follow the luma plane back to back, so they are cut by element
    count (when height / 2 is odd, a chroma plane does not start on a row boundary).
    """
    flat = image.reshape(-1)
    luma, chroma = width * height, (width // 2) * (height // 2)
    return (
        flat[:luma].reshape(height, width),
        flat[luma : luma + chroma].reshape(height // 2, width // 2),
        flat[luma + chroma :].reshape(height // 2, width // 2),
    )


def _fill(planes: Planes, box: Box, colour: Yuv) -> None:
    """Paint a rectangle; coordinates are rounded to even so that chroma lines up."""
    y_plane, u_plane, v_plane = planes
    x0, y0, x1, y1 = (c - c % 2 for c in box)
    if x1 <= x0 or y1 <= y0:
        return
    y_plane[y0:y1, x0:x1] = colour[0]
    u_plane[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2] = colour[1]
    v_plane[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2] = colour[2]


def _fill_luma(y_plane: NDArray[np.uint8], box: Box, luma: int) -> None:
    x0, y0, x1, y1 = box
    y_plane[y0:y1, x0:x1] = luma


@dataclass(frozen=True, slots=True)
class _Scene:
    width: int
    height: int
    fps: int
    frames: int
    background: NDArray[np.uint8]  # (height * 3 // 2, width) yuv420p, without moving parts
    counter: _CounterLayout
    band: Box  # the grey ramp the square glides over
    bar: Box  # the time-of-loop bar


def _make_scene(width: int, height: int, fps: int, frames: int) -> _Scene:
    image = np.empty((height * 3 // 2, width), dtype=np.uint8)
    planes = _planes(image, width, height)
    band_top = round(0.70 * height)
    bar_top = round(0.93 * height)
    for i, colour in enumerate(_BARS):
        x0 = round(i * width / len(_BARS))
        x1 = round((i + 1) * width / len(_BARS))
        _fill(planes, (x0, 0, x1, band_top), colour)
    # Grey ramp, black to white, left to right.
    _fill(planes, (0, band_top, width, height), _BLACK)
    ramp = np.linspace(_Y_BLACK, _Y_WHITE, width).round().astype(np.uint8)
    planes[0][band_top - band_top % 2 : bar_top - bar_top % 2, :] = ramp
    counter = _counter_layout(width, height)
    _fill(planes, counter.panel, _BLACK)
    return _Scene(
        width=width,
        height=height,
        fps=fps,
        frames=frames,
        background=image,
        counter=counter,
        band=(0, band_top, width, bar_top),
        bar=(0, bar_top, width, height),
    )


def _draw_frame(scene: _Scene, index: int) -> VideoFrame:
    """Frame ``index`` of the loop, as a yuv420p VideoFrame."""
    w, h = scene.width, scene.height
    image = scene.background.copy()
    planes = _planes(image, w, h)
    phase = index / scene.frames

    # The gliding square: a cosine path, so the loop's seam is smooth too.
    _, band_y0, _, band_y1 = scene.band
    side = max(2, round(0.8 * (band_y1 - band_y0)))
    x = round((1 - math.cos(2 * math.pi * phase)) / 2 * (w - side))
    y = band_y0 + (band_y1 - band_y0 - side) // 2
    _fill(planes, (x, y, x + side, y + side), _ORANGE)

    # Time-of-loop bar with a tick at every second.
    bx0, by0, bx1, by1 = scene.bar
    _fill(planes, scene.bar, _DARK_GREY)
    _fill(planes, (bx0, by0, round((index + 1) / scene.frames * (bx1 - bx0)), by1), _WHITE)
    seconds = scene.frames // scene.fps
    tick = max(2, round(w / 320))
    for s in range(1, seconds):
        tx = round(s * w / seconds)
        _fill_luma(planes[0], (tx - tick // 2, by0, tx - tick // 2 + tick, by1), _Y_BLACK)

    # Sync flash: the first 100 ms of each second, in step with the audio beep.
    if index % scene.fps < max(1, round(scene.fps / 10)):
        size = round(0.12 * h)
        _fill(planes, (w - size, 0, w, size), _WHITE)

    # The counter, white segments on the black panel.
    text = f"{index:0{COUNTER_DIGITS}d}"
    for digit_char, boxes in zip(text, scene.counter.segments, strict=True):
        for name in _DIGIT_SEGMENTS[int(digit_char)]:
            _fill_luma(planes[0], boxes[name], _Y_WHITE)

    return VideoFrame.from_ndarray(image, format="yuv420p")


# ------------------------------------------------------------------------- video


def _open_video_encoder(
    codec: VideoCodec, width: int, height: int, fps: int
) -> av.VideoCodecContext:
    name = "libx264" if codec == "h264" else "libvpx"
    ctx = av.CodecContext.create(name, "w")
    assert isinstance(ctx, av.VideoCodecContext)
    ctx.width = width
    ctx.height = height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = Fraction(1, fps)
    ctx.framerate = Fraction(fps, 1)
    ctx.gop_size = fps
    ctx.max_b_frames = 0
    ctx.bit_rate = VIDEO_BITRATE
    if codec == "h264":
        ctx.profile = "Baseline"
        ctx.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            # Exactly one IDR per second, none in between; SPS/PPS before each IDR
            # (the default without a global header, said here so nobody loses it).
            "x264-params": (
                f"keyint={fps}:min-keyint={fps}:scenecut=0:bframes=0:repeat-headers=1:"
                f"vbv-maxrate={VIDEO_BITRATE // 1000}:vbv-bufsize={VIDEO_BITRATE // 1000}"
            ),
        }
    else:
        ctx.options = {
            "deadline": "realtime",
            "cpu-used": "16",  # fastest; the synthetic picture still comes out > 50 dB PSNR
            "static-thresh": "100",  # skip the blocks that do not change (most of them)
            "lag-in-frames": "0",  # no look-ahead, hence no invisible alt-ref frames
            "auto-alt-ref": "0",
            "keyint_min": str(fps),
        }
    return ctx


def _encode_video(
    codec: VideoCodec, width: int, height: int, fps: int, frames: int
) -> tuple[EncodedChunk, ...]:
    scene = _make_scene(width, height, fps, frames)
    ctx = _open_video_encoder(codec, width, height, fps)
    packets: list[Packet[Stream]] = []
    for index in range(frames):
        frame = _draw_frame(scene, index)
        frame.pts = index
        frame.time_base = Fraction(1, fps)
        if index % fps == 0:
            frame.pict_type = PictureType.I  # belt and braces: force the GOP start
        packets.extend(ctx.encode(frame))
    packets.extend(ctx.encode(None))

    if len(packets) != frames:
        raise RuntimeError(f"{codec} encoder gave {len(packets)} packets for {frames} frames")
    chunks: list[EncodedChunk] = []
    for index, packet in enumerate(packets):
        if packet.pts != index:
            raise RuntimeError(f"{codec} encoder reordered frames (pts {packet.pts} at {index})")
        keyframe = bool(packet.is_keyframe)
        if keyframe != (index % fps == 0):
            raise RuntimeError(f"{codec} encoder put a keyframe flag wrong at frame {index}")
        start = index * VIDEO_CLOCK_RATE // fps
        end = (index + 1) * VIDEO_CLOCK_RATE // fps
        chunks.append(EncodedChunk(bytes(packet), start, end - start, keyframe))
    return tuple(chunks)


# ------------------------------------------------------------------------- audio


def _tone(samples: int, shift: int) -> NDArray[np.int16]:
    """Stereo s16 test sound sample ``n`` holds the sound at time ``n + shift``.

    A quiet 440 Hz tone, and a 1 kHz beep for the first 100 ms of each second (5 ms
    fades, no clicks). Both are periodic in one second, so any whole-second loop is.
    """
    n = np.arange(samples, dtype=np.int64) + shift
    t = (n % AUDIO_CLOCK_RATE) / AUDIO_CLOCK_RATE
    signal = 0.1 * np.sin(2 * np.pi * 440 * t)
    beep_len, fade = 0.100, 0.005
    envelope = np.clip(np.minimum(t / fade, (beep_len - t) / fade), 0.0, 1.0)
    signal += 0.5 * envelope * np.sin(2 * np.pi * 1000 * t)
    mono = np.round(signal * 32767).astype(np.int16)
    return np.repeat(mono, 2)  # interleaved L R L R ...


def _encode_audio_pass(seconds: int, shift: int) -> list[Packet[Stream]]:
    """Encode the tone for two loops, so the second is encoded from a warmed-up state."""
    ctx = av.CodecContext.create("libopus", "w")
    assert isinstance(ctx, av.AudioCodecContext)
    ctx.sample_rate = AUDIO_CLOCK_RATE
    ctx.layout = "stereo"
    ctx.format = "s16"
    ctx.bit_rate = AUDIO_BITRATE
    ctx.time_base = Fraction(1, AUDIO_CLOCK_RATE)
    # Constrained VBR: plain VBR overshoots on this tonal signal by a third.
    ctx.options = {"application": "audio", "frame_duration": "20", "vbr": "constrained"}
    total = 2 * seconds * AUDIO_CLOCK_RATE
    pcm = _tone(total, shift)
    packets: list[Packet[Stream]] = []
    for start in range(0, total, AUDIO_PACKET_SAMPLES):
        chunk = pcm[2 * start : 2 * (start + AUDIO_PACKET_SAMPLES)].reshape(1, -1)
        frame = AudioFrame.from_ndarray(chunk, format="s16", layout="stereo")
        frame.sample_rate = AUDIO_CLOCK_RATE
        frame.pts = start
        frame.time_base = Fraction(1, AUDIO_CLOCK_RATE)
        packets.extend(ctx.encode(frame))
    packets.extend(ctx.encode(None))
    return packets


def _encode_audio(seconds: int) -> tuple[EncodedChunk, ...]:
    per_loop = seconds * AUDIO_CLOCK_RATE // AUDIO_PACKET_SAMPLES
    preskip = _OPUS_PRESKIP_GUESS
    packets = _encode_audio_pass(seconds, preskip)
    first_pts = packets[0].pts if packets else None
    if first_pts is not None and -first_pts != preskip:
        # Another libopus with another look-ahead: encode again with the real one.
        preskip = -first_pts
        packets = _encode_audio_pass(seconds, preskip)
    if len(packets) < 2 * per_loop:
        raise RuntimeError(f"libopus gave {len(packets)} packets, expected {2 * per_loop}")
    second_loop = packets[per_loop : 2 * per_loop]
    return tuple(
        EncodedChunk(bytes(p), i * AUDIO_PACKET_SAMPLES, AUDIO_PACKET_SAMPLES, True)
        for i, p in enumerate(second_loop)
    )


# ------------------------------------------------------------------------ public


def encode_test_loop(
    width: int = 640,
    height: int = 360,
    fps: int = 30,
    seconds: float = 4.0,
    codec: VideoCodec = "h264",
) -> EncodedLoop:
    """Encode the demo loop once: video (H.264 or VP8) and Opus audio.

    ``seconds`` is rounded to a whole number of seconds (at least 1): the keyframe
    interval is one second and the loop must be a whole number of GOPs. ``width`` and
    ``height`` must be even (yuv420p), at least 32. ``fps`` is a whole frame rate, 1 to
    120; one that divides 90 000 (24, 25, 30, 50, 60 do) gives evenly spaced RTP
    timestamps, any other is rounded down to the tick, still exact over the loop.
    Takes about 0.2 s for the defaults; ``EncodedLoop.encode_seconds`` records it.
    """
    if codec not in ("h264", "vp8"):
        raise ValueError(f"codec must be 'h264' or 'vp8', not {codec!r}")
    if width < 32 or height < 32 or width % 2 or height % 2:
        raise ValueError(f"width and height must be even and >= 32, got {width}x{height}")
    if not 1 <= fps <= 120:
        raise ValueError(f"fps must be 1..120, got {fps}")
    whole_seconds = max(1, round(seconds))
    frames = whole_seconds * fps
    if frames > 10**COUNTER_DIGITS:
        raise ValueError(f"{frames} frames do not fit the {COUNTER_DIGITS}-digit counter")

    started = time.perf_counter()
    video = _encode_video(codec, width, height, fps, frames)
    audio = _encode_audio(whole_seconds)
    return EncodedLoop(
        codec=codec,
        width=width,
        height=height,
        fps=fps,
        seconds=whole_seconds,
        video=video,
        audio=audio,
        encode_seconds=time.perf_counter() - started,
    )


class _LoopTrack(MediaStreamTrack):
    """Replays encoded chunks forever, in real time, with ever-increasing pts."""

    def __init__(
        self,
        chunks: Sequence[EncodedChunk],
        clock_rate: int,
        loop_ticks: int,
        *,
        clock: Clock,
        sleep: Sleep,
        max_lag: float,
    ) -> None:
        super().__init__()
        if not chunks:
            raise ValueError("empty loop")
        self._chunks = chunks
        self._clock_rate = clock_rate
        self._time_base = Fraction(1, clock_rate)
        self._loop_ticks = loop_ticks
        self._clock = clock
        self._sleep = sleep
        self._max_lag = max_lag
        self._start: float | None = None
        self._index = 0

    @property
    def packets_sent(self) -> int:
        """How many packets recv() has returned."""
        return self._index

    async def recv(self) -> Packet[Stream]:
        if self.readyState != "live":
            raise MediaStreamError
        loop_index, position = divmod(self._index, len(self._chunks))
        chunk = self._chunks[position]
        pts = loop_index * self._loop_ticks + chunk.pts

        now = self._clock()
        if self._start is None:
            self._start = now
        else:
            wait = self._start + pts / self._clock_rate - now
            if wait > 0:
                await self._sleep(wait)
                if self.readyState != "live":
                    raise MediaStreamError
            elif -wait > self._max_lag:
                # The event loop stalled (debugger, suspended host, overload): carry on
                # from now rather than flush all the backlog at once. pts stays
                # continuous; only the wall-clock anchor moves.
                self._start -= wait

        self._index += 1
        return chunk.packet(pts, self._time_base)


class LoopVideoTrack(_LoopTrack):
    """The loop's video as pre-encoded packets (pts in 1/90000), replayed forever.

    ``clock`` and ``sleep`` are injectable (tests pass a fake clock to run instantly);
    ``max_lag`` is how far behind real time the track may fall (after a stall) before
    it re-anchors instead of bursting to catch up.
    """

    kind = "video"

    def __init__(
        self,
        loop: EncodedLoop,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        max_lag: float = 0.5,
    ) -> None:
        super().__init__(
            loop.video,
            VIDEO_CLOCK_RATE,
            loop.video_loop_ticks,
            clock=clock,
            sleep=sleep,
            max_lag=max_lag,
        )
        self.loop = loop


class LoopAudioTrack(_LoopTrack):
    """The loop's Opus audio as pre-encoded 20 ms packets (pts in 1/48000), forever."""

    kind = "audio"

    def __init__(
        self,
        loop: EncodedLoop,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        max_lag: float = 0.5,
    ) -> None:
        super().__init__(
            loop.audio,
            AUDIO_CLOCK_RATE,
            loop.audio_loop_ticks,
            clock=clock,
            sleep=sleep,
            max_lag=max_lag,
        )
        self.loop = loop


def prefer_codec(transceiver: RTCRtpTransceiver, mime_type: str) -> None:
    """Restrict a transceiver to one codec (plus its RTX), as pre-encoded media needs.

    aiortc offers VP8 before H264; if the peer picked another codec than the loop's,
    ``pack()`` would send the loop's bytes under the wrong payload format.
    """
    codecs = RTCRtpSender.getCapabilities(transceiver.kind).codecs
    chosen = [c for c in codecs if c.mimeType.lower() == mime_type.lower()]
    if not chosen:
        raise ValueError(f"aiortc cannot send {mime_type}")
    rtx = [c for c in codecs if c.mimeType.lower() == f"{transceiver.kind}/rtx"]
    transceiver.setCodecPreferences(chosen + rtx)


def add_loop_tracks(
    pc: RTCPeerConnection,
    loop: EncodedLoop,
    *,
    direction: str = "sendonly",
) -> tuple[LoopVideoTrack, LoopAudioTrack]:
    """Add the loop's video and audio to ``pc`` (before createOffer), codecs pinned."""
    video = LoopVideoTrack(loop)
    audio = LoopAudioTrack(loop)
    video_transceiver = pc.addTransceiver(video, direction=direction)
    prefer_codec(video_transceiver, loop.mime_type)
    audio_transceiver = pc.addTransceiver(audio, direction=direction)
    prefer_codec(audio_transceiver, "audio/opus")
    return video, audio
