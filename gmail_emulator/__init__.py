"""A Gmail API v1 + Google OAuth emulator over real HTTP on loopback (stdlib only).

    from gmail_emulator import Emulator, EmulatorConfig
    emu = Emulator(EmulatorConfig(seed=0))
    mb = emu.add_mailbox("alice@example.com", count=3000)
    with emu.serve() as base_url:
        ...

See docs/emulator.md.
"""

from .config import EmulatorConfig
from .control import ControlClient
from .emulator import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Emulator
from .mailbox import Mailbox

__all__ = [
           "DEFAULT_CLIENT_ID",
           "DEFAULT_CLIENT_SECRET",
           "ControlClient",
           "Emulator",
           "EmulatorConfig",
           "Mailbox",
]
