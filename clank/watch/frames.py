"""Watch frames for the agent surface and the dashboard: ``ScreenFrame``, the per-watch
``LatestFrameStore`` and the latest-wins ``FrameChannel`` to the screen-watch pipeline.

They are defined in ``clank.session.watch_frames`` because the watch roles that produce them live
in ``session`` (which may not import ``watch``); this module is where consumers import them from.
"""

from __future__ import annotations

from clank.session.watch_frames import (
    FRAME_CHANNEL_SIZE,
    FrameChannel,
    FrameChannelStatistics,
    FrameStoreStatistics,
    LatestFrameStore,
    ScreenFrame,
    StreamType,
)

__all__ = [
    "FRAME_CHANNEL_SIZE",
    "FrameChannel",
    "FrameChannelStatistics",
    "FrameStoreStatistics",
    "LatestFrameStore",
    "ScreenFrame",
    "StreamType",
]
