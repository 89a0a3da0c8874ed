"""Meridian in a process of its own where every aiortc decoder and encoder refuses to work.

Viewers that still decode frames from it prove that the relay path never decodes or
encodes media. Any attempt is also written to the file named by MERIDIAN_CODEC_TRAP,
because a decoder thread's exception would otherwise go unseen.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import aiortc.codecs
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
from aiortc.codecs import h264, opus, vpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import run


def refuse(*args: object, **kwargs: object) -> NoReturn:
    with Path(os.environ["MERIDIAN_CODEC_TRAP"]).open("a") as trap:
        trap.write("a codec was used on the relay path\n")
    raise AssertionError("the relay path must not decode or encode media")


for module in (aiortc.codecs, aiortc.rtcrtpreceiver, aiortc.rtcrtpsender):
    for name in ("get_decoder", "get_encoder"):
        if hasattr(module, name):
            setattr(module, name, refuse)
for codec_class in (
    h264.H264Decoder,
    h264.H264Encoder,
    vpx.Vp8Decoder,
    vpx.Vp8Encoder,
    opus.OpusDecoder,
    opus.OpusEncoder,
):
    for method in ("decode", "encode", "pack", "__init__"):
        if method in vars(codec_class):
            setattr(codec_class, method, refuse)

# The trap must really be set where aiortc looks the codecs up, or the test proves nothing.
assert vars(aiortc.rtcrtpreceiver)["get_decoder"] is refuse
assert vars(aiortc.rtcrtpsender)["get_encoder"] is refuse

if __name__ == "__main__":
    sys.exit(run.main(sys.argv[1:]))
