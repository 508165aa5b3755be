"""certfleet: renew and roll out TLS certificates across an AudioCodes estate."""

from __future__ import annotations

__all__ = ["__version__"]
__version__ = "0.1.0"
