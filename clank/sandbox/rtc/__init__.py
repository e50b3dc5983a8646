"""The sandbox's voice and stream servers: websocket + UDP, SFU, DAVE external sender, simulated users.

* :mod:`.server` — :class:`MediaServer`: one voice channel or one Go Live stream (websocket on
  127.0.0.1 via ``VoiceServerConnectionCore``, one UDP socket, a ``DaveGroupServer``).
* :mod:`.connection` — one websocket client (its core, outbox, writer) and the events it raises.
* :mod:`.udp_plane` — the server's UDP socket: IP discovery, keep-alives, latching, lossy links,
  the silent-client rule; what enters and leaves the SFU.
* :mod:`.dave_router` — delivers the DAVE group's output to members and runs its transition timer.
* :mod:`.sfu` — the relay: decrypt with the sender's key, re-encrypt per receiver with the
  receiver's key, PT and the server's own counter; RTCP feedback routed to the media sender.
* :mod:`.receiver` — the client-side receive path (transport AEAD, depacketize, DAVE decrypt).
* :mod:`.users` / :mod:`.streamer` — simulated members (speaker + listener) and video senders.
* :mod:`.backend` — :class:`RtcMediaBackend`, the world's ``MediaBackend`` and ``sb.media``.
"""
