"""How closely the sandbox imitates Discord where Discord is less forgiving than a test double.

The sandbox and the client were written from the same notes, so a kind sandbox hides the places
where the client and Discord disagree. ``STRICT`` (the default everywhere: tests, ``clank run``,
``clank sandbox``) behaves like Discord as far as the reference implementations tell us;
``LENIENT`` keeps the forgiving behaviour and is used only by a test that says why.

Each rule is one field so a test can relax exactly one thing::

    MediaServerConfig(fidelity=attrs.evolve(STRICT, silent_client_timeout=None))
"""

from __future__ import annotations

from typing import Final, Literal

import attrs

__all__ = ["LENIENT", "STRICT", "FidelityName", "FidelityRules", "fidelity_rules"]

FidelityName = Literal["strict", "lenient"]


@attrs.frozen
class FidelityRules:
    name: FidelityName
    silent_client_timeout: float | None
    """Seconds without any datagram from a client's UDP address after which the server stops
    sending it media (Discord: a listen-only client without keep-alives stops receiving after a
    few minutes; we use 60 s, in trio time so a test clock scales it). None: never."""

    heartbeat_ack_echo: bool
    """op6 ``t`` echoes the client's nonce (lenient) or is another value (strict: clients must take
    any op6 as the answer to their outstanding heartbeat)."""
    video_after_own_op12: bool
    """Other users' op12 video states reach a client only after it sent its own op12 (Discord sends
    webcam states to clients that announced their video state; clanky and Discord-video-stream send
    an inactive op12 on the voice leg for this reason)."""

    sink_wants_flat_only: bool
    """Only op15's flat SSRC keys and ``any`` decide what is forwarded (the documented form);
    clankvox's nested ``streams`` map alone is not relied on."""
    stream_channel_is_dave_group: bool
    """A stream server refuses an identify whose ``channel_id`` is not its DAVE group
    (``rtc_server_id - 1``) with 4004 (clankvox's value, which worked live)."""

    video_padding_share: float = 0.0
    """Share of relayed video packets the SFU sends with RTP padding (Chrome and Discord pad about
    half of them; a sender's own padding is always kept)."""
    unsolicited_rtx_share: float = 0.0
    """Share of relayed video packets followed by RTX the receiver did not NACK: a copy of the
    packet or a padding-only probe (Discord's SFU probes bandwidth with RTX)."""
    media_after_own_op12: bool = False
    """No RTP reaches a real client before it sent its own op12 (an inactive one on a voice or
    watch leg is enough): community docs say video can be refused without one."""
    control_noise: bool = False
    """The voice/stream servers send what Discord sends besides the protocol proper: op16
    (backend version) after op4 and in answer to the client's op16, op18 (client flags) and op20
    (client platform) after op11 on every leg, and op12 video states with integral floats and an
    inactive ``ssrc``-less layer, each repeated as an op18 carrying that video state (clankvox
    reads op12 and op18 as video state)."""
    speaking_delay: float = 0.0
    """Seconds by which op5 (speaking) trails the speaker's first packets for a real client, so
    media arrives before the op5 naming its SSRC (Discord promises no order; clients hold and
    trial-decrypt unannounced audio)."""
    stale_first_video_frame: bool = False
    """The first video frame a real client gets on each SSRC cannot be DAVE-decrypted (as one
    sealed before the receiver had the key, or with the previous epoch's key)."""


STRICT: Final = FidelityRules(
    name="strict",
    silent_client_timeout=60.0,
    heartbeat_ack_echo=False,
    video_after_own_op12=True,
    sink_wants_flat_only=True,
    stream_channel_is_dave_group=True,
    video_padding_share=0.5,
    unsolicited_rtx_share=0.05,
    media_after_own_op12=True,
    control_noise=True,
    speaking_delay=0.2,
    stale_first_video_frame=True,
)
LENIENT: Final = FidelityRules(
    name="lenient",
    silent_client_timeout=None,
    heartbeat_ack_echo=True,
    video_after_own_op12=False,
    sink_wants_flat_only=False,
    stream_channel_is_dave_group=False,
)


def fidelity_rules(name: FidelityName) -> FidelityRules:
    return STRICT if name == "strict" else LENIENT
