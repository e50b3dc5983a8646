"""The media server's UDP side: one socket, IP discovery, keep-alives, latching, and the SFU's in/out.

The :class:`~clank.sandbox.rtc.server.MediaServer` owns one :class:`UdpPlane`. Datagrams from
real clients arrive on the socket (``on_datagram``), simulated users hand theirs in
(``uplink``); both pass the participant's uplink faults and reach the SFU in ``ingest``. What
the SFU sends goes out through ``deliver`` (downlink faults, then the socket or the simulated
user's sink). The fidelity rule ``silent_client_timeout`` is applied here: a client whose
address has been silent too long is not sent media.
"""

from __future__ import annotations

from typing import Literal

import trio

from clank.errors import MalformedPacket, SandboxError
from clank.io.lossy import LossyLink, open_lossy_sender
from clank.io.udp import Address, DatagramEndpoint
from clank.sandbox.fidelity import FidelityRules
from clank.sandbox.rtc.peer import Participant
from clank.sandbox.rtc.sfu import Sfu
from clank.wire.ip_discovery import DiscoveryRequest, build_response
from clank.wire.rtp import PacketKind, classify

Direction = Literal["uplink", "downlink"]


class UdpPlane:
    """See the module docstring. ``participants`` is the server's live map (shared, not copied)."""

    def __init__(self, participants: dict[int, Participant], fidelity: FidelityRules, seed: int) -> None:
        self._participants = participants
        self._fidelity = fidelity
        self.sfu = Sfu(self.deliver, seed=seed, fidelity=fidelity)
        self.endpoint: DatagramEndpoint | None = None
        self.discovered: dict[int, Address] = {}  # SSRC -> address from IP discovery
        self._link_scopes: dict[tuple[int, Direction], trio.CancelScope] = {}
        self._heard: dict[Address, float] = {}  # client UDP address -> last datagram (trio time)
        self.dropped = 0
        self.keepalives_in = 0
        self.silent_dropped = 0
        """Datagrams not sent to a client whose UDP socket was silent too long (fidelity rule)."""

    @property
    def local_address(self) -> Address:
        if self.endpoint is None:
            raise SandboxError("media server is not running")
        return self.endpoint.local_address

    # ------------------------------------------------------------------ lossy links (faults)

    async def set_link(
        self, participant: Participant, direction: Direction, link: LossyLink | None, nursery: trio.Nursery
    ) -> None:
        """Impair one direction of one participant's media (None: back to a clean link)."""
        old = self._link_scopes.pop((participant.user_id, direction), None)
        if old is not None:
            old.cancel()
        setattr(participant, direction, None)
        if link is not None:
            await nursery.start(self._run_link, participant, direction, link)

    def clear_links(self, user_id: int) -> None:
        for direction in ("uplink", "downlink"):
            scope = self._link_scopes.pop((user_id, direction), None)
            if scope is not None:
                scope.cancel()

    async def _run_link(
        self,
        participant: Participant,
        direction: Direction,
        link: LossyLink,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        if direction == "uplink":

            def deliver(data: bytes) -> None:
                self.ingest(participant, data)
        else:

            def deliver(data: bytes) -> None:
                self.deliver_now(participant, data)

        with trio.CancelScope() as scope:
            self._link_scopes[(participant.user_id, direction)] = scope
            async with open_lossy_sender(link, deliver) as sender:
                setattr(participant, direction, sender)
                task_status.started()
                await trio.sleep_forever()

    # ------------------------------------------------------------------ in

    def on_datagram(self, data: bytes, address: Address) -> None:
        self._heard[address] = trio.current_time()
        kind = classify(data)
        if kind is PacketKind.IP_DISCOVERY_REQUEST:
            self._on_discovery(data, address)
            return
        if kind is PacketKind.KEEPALIVE:
            self.keepalives_in += 1  # nothing is sent back (wire.udp_keepalive)
            return
        participant = self._participant_for(data, address, kind)
        if participant is None:
            self.dropped += 1
            return
        participant.address = address
        self.uplink(participant, data)

    def _on_discovery(self, data: bytes, address: Address) -> None:
        try:
            request = DiscoveryRequest.parse(data)
        except MalformedPacket:
            self.dropped += 1
            return
        self.discovered[request.ssrc] = address
        for participant in self._participants.values():
            if participant.audio_ssrc == request.ssrc and not participant.internal:
                participant.address = address
        self._send(build_response(request.ssrc, address[0], address[1]), address)

    def _participant_for(self, data: bytes, address: Address, kind: PacketKind) -> Participant | None:
        for participant in self._participants.values():
            if participant.address == address and not participant.internal:
                return participant
        # Latch on the SSRC (RTP: bytes 8-11; RTCP: the sender SSRC at 4-7).
        offset = 8 if kind is PacketKind.RTP else 4
        if len(data) < offset + 4:
            return None
        ssrc = int.from_bytes(data[offset : offset + 4], "big")
        for participant in self._participants.values():
            if not participant.internal and participant.owns_ssrc(ssrc):
                return participant
        return None

    def uplink(self, participant: Participant, data: bytes) -> None:
        """A datagram from ``participant`` enters the server (through its uplink faults)."""
        if participant.drop_udp:
            self.dropped += 1
            return
        if participant.uplink is not None:
            participant.uplink.send_nowait(data)
        else:
            self.ingest(participant, data)

    def ingest(self, participant: Participant, data: bytes) -> None:
        if self._participants.get(participant.user_id) is not participant:
            return  # left while the packet was in a delay line
        participant.packets_in += 1
        kind = classify(data)
        if kind is PacketKind.RTP:
            others = [p for p in self._participants.values() if p is not participant]
            self.sfu.relay_rtp(participant, data, others)
        elif kind is PacketKind.RTCP:
            self.sfu.handle_rtcp(participant, data, list(self._participants.values()))
        else:
            self.dropped += 1

    # ------------------------------------------------------------------ out

    def deliver(self, receiver: Participant, data: bytes) -> None:
        """The SFU's output for ``receiver`` (through its downlink faults)."""
        if receiver.drop_udp:
            self.dropped += 1
            return
        if receiver.downlink is not None:
            receiver.downlink.send_nowait(data)
        else:
            self.deliver_now(receiver, data)

    def deliver_now(self, receiver: Participant, data: bytes) -> None:
        if self._participants.get(receiver.user_id) is not receiver:
            return
        receiver.packets_out += 1
        if receiver.internal:
            receiver.sink.datagram(data)
        elif receiver.address is not None:
            if self._silent(receiver.address):
                self.silent_dropped += 1
                return
            self._send(data, receiver.address)
        else:
            self.dropped += 1

    def _silent(self, address: Address) -> bool:
        """Fidelity: Discord stops sending to a UDP client it has not heard from for a while."""
        timeout = self._fidelity.silent_client_timeout
        if timeout is None:
            return False
        heard = self._heard.get(address)
        return heard is None or trio.current_time() - heard > timeout

    def _send(self, data: bytes, address: Address) -> None:
        if self.endpoint is not None:
            self.endpoint.send_nowait(data, address)
