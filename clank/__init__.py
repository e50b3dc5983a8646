"""clank: eyes and a voice in Discord for agents and people."""

__version__ = "0.1.0"
