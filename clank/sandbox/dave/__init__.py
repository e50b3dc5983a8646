"""The sandbox's DAVE external sender: MLS codec (``mls``) and per-call group bookkeeping (``group``)."""

from clank.sandbox.dave.group import DaveGroupServer, DaveGroupStatistics, Outgoing
from clank.sandbox.dave.mls import ExternalSender, KeyPackage

__all__ = ["DaveGroupServer", "DaveGroupStatistics", "ExternalSender", "KeyPackage", "Outgoing"]
