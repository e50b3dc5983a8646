"""What a media connection reports: :class:`MediaConnectionStatistics` and its log lines.

One frozen value per call of :meth:`clank.io.media_connection.MediaConnection.statistics`: the
leg core's state and counters (packets, drops by reason, resumes, reconnects), the voice-gateway
and DAVE statistics, the datagram endpoint's and the driver's own counters. :func:`log_leg_event`
is the log line (if any) of each leg event the driver delivers: ready, resumed, ended, a DAVE
message or voice message it could not use.
"""

from __future__ import annotations

import attrs

from clank.crypto.dave_stats import DaveStatistics
from clank.io.udp import DatagramEndpoint, UdpStatistics
from clank.logging import get_logger
from clank.protocol import voice_gateway as vgc
from clank.protocol.media_leg import (
    DaveProblem,
    MediaEvent,
    MediaLegCore,
    TransportState,
    TransportStateChanged,
)

__all__ = ["MediaConnectionStatistics", "leg_statistics", "log_leg_event"]

log = get_logger("clank.media_connection")


@attrs.frozen
class MediaConnectionStatistics:
    state: TransportState
    ssrc: int | None
    mode: str | None
    packets_in: int
    packets_out: int
    rtcp_in: int
    rtcp_out: int
    send_dropped: int
    control_dropped: int
    drops: dict[str, int]
    resumes: int
    reconnects: int
    heartbeat_latency: float | None
    events_dropped: int
    gateway: vgc.VoiceGatewayStatistics
    udp: UdpStatistics | None
    dave: DaveStatistics
    keepalives_sent: int = 0
    """UDP keep-alives sent (wire.udp_keepalive; every ``voice.udp_keepalive_s`` from Ready)."""


def leg_statistics(
    leg: MediaLegCore, udp: DatagramEndpoint | None, events_dropped: int, keepalives_sent: int
) -> MediaConnectionStatistics:
    gateway = leg.gateway.statistics()
    counters = leg.counters()
    cipher = leg.cipher
    return MediaConnectionStatistics(
        state=leg.state,
        ssrc=leg.ssrc,
        mode=cipher.mode if cipher is not None else None,
        packets_in=counters.packets_in,
        packets_out=counters.packets_out,
        rtcp_in=counters.rtcp_in,
        rtcp_out=counters.rtcp_out,
        send_dropped=counters.send_dropped,
        control_dropped=counters.control_dropped,
        drops=counters.drops,
        resumes=counters.resumes,
        reconnects=counters.reconnects,
        heartbeat_latency=gateway.last_latency,
        events_dropped=events_dropped,
        gateway=gateway,
        udp=udp.statistics() if udp is not None else None,
        dave=leg.dave_statistics(),
        keepalives_sent=keepalives_sent,
    )


def log_leg_event(role: str, event: MediaEvent) -> None:
    """Log what a person running clank wants to see of ``role``'s leg event (most are silent)."""
    if isinstance(event, vgc.SessionEstablished):
        log.info(
            "voice connection ready",
            role=role,
            mode=event.mode,
            dave_protocol_version=event.dave_protocol_version,
            ssrc=event.ssrc,
        )
    elif isinstance(event, vgc.Resumed):
        log.info("voice connection resumed", role=role)
    elif isinstance(event, DaveProblem):
        log.warning("dave message unusable", role=role, error=event.error)
    elif isinstance(event, vgc.MalformedDropped):
        log.warning("voice message malformed; dropped", role=role, op=event.op, error=event.reason)
    elif isinstance(event, TransportStateChanged) and event.state in ("reconnecting", "failed"):
        # A leg that cannot connect at all is a warning (a wrong voice_url_scheme, a firewall).
        unreachable = (event.reason or "").startswith("could not connect")
        (log.warning if unreachable or event.state == "failed" else log.info)(
            "voice connection ended",
            role=role,
            state=event.state,
            reason=event.reason,
            code=event.close_code,
        )
