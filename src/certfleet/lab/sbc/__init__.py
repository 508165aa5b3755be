"""A lab Mediant SBC: the REST API subset certfleet uses, over real HTTPS.

The lab device behaves as the AudioCodes REST API reference 7.4 documents it
(all under ``/api/v1``, Basic auth, multipart uploads with a part named
``file``, JSON answers carrying ``description``), and it really serves what it
holds: its management HTTPS and its SIP-TLS listener present the certificate
of the TLS context bound to them, so ``openssl s_client`` sees what the device
believes it holds.

It emulates an independent device, so it uses ``cryptography`` directly and
never ``certfleet.pki``.

Behaviour worth knowing (lab choices where the documentation is silent):

* A context presents a new certificate only once its certificate and private
  key match. Uploading the key first (as certfleet does) leaves the listeners
  presenting the previous pair until the matching certificate arrives.
* Changes live in the running configuration; ``POST /actions/saveConfiguration``
  copies them to "flash". :meth:`LabSbc.restart` (or ``POST /actions/reset``
  without ``saveConfiguration``) drops unsaved changes: the listeners present
  the saved certificate again.
* An HA pair (:class:`LabSbcPair`) shares one configuration between the active
  and the standby unit: a change made on the active shows on the standby's
  listeners too. The standby answers 409 to changes, and after every change
  the pair answers 409 to the next ``sync_busy`` changing requests (and to any
  changing request within ``sync_window`` seconds), like an HA sync.
* :class:`Faults` injects latency, dropped connections, 500s, 409s, hung
  requests and frozen listeners, optionally only on the Nth matching request.

Usage::

    with LabSbc("sbc1") as sbc:
        sbc.url, sbc.user, sbc.password, sbc.management_sha256, sbc.sip_port
"""

from .device import LabSbc, LabSbcPair, stop_all
from .faults import FaultRule, Faults
from .material import API_PREFIX as API_PREFIX
from .material import DEFAULT_BINDINGS as DEFAULT_BINDINGS
from .material import DEFAULT_CONTEXTS as DEFAULT_CONTEXTS
from .material import LabKey as LabKey
from .rest import parse_multipart
from .state import ContextView

__all__ = [
    "ContextView",
    "FaultRule",
    "Faults",
    "LabSbc",
    "LabSbcPair",
    "parse_multipart",
    "stop_all",
]
