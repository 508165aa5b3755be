"""A small authoritative DNS server of the tests: TXT answers and RFC 2136 updates with TSIG.

It serves one zone from memory over UDP and TCP on 127.0.0.1, answers TXT
queries authoritatively, and applies dynamic updates only when they are
signed with its TSIG key (NOTAUTH otherwise), as BIND's ``update-policy``
does. Real DNS on the wire (dnspython parses and signs), so the rfc2136
provider and the propagation check are tested against a server, not a mock.
"""

from __future__ import annotations

import socketserver
import struct
import threading
from typing import Any

import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.tsigkeyring


class DnsServer:
    def __init__(self, zone: str, key_name: str, secret: str) -> None:
        self.zone = dns.name.from_text(zone)
        self.keyring = dns.tsigkeyring.from_text({key_name: secret})
        self.txt: dict[str, set[str]] = {}
        self.cnames: dict[str, str] = {}
        self.refused = 0
        self.lock = threading.Lock()
        outer = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                sock.sendto(outer.answer(data), self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                head = self.request.recv(2)
                if len(head) < 2:
                    return
                (length,) = struct.unpack("!H", head)
                data = b""
                while len(data) < length:
                    chunk = self.request.recv(length - len(data))
                    if not chunk:
                        return
                    data += chunk
                reply = outer.answer(data)
                self.request.sendall(struct.pack("!H", len(reply)) + reply)

        # UDP and TCP on one port number: take a free TCP port, then try its UDP twin.
        for _ in range(50):
            self.tcp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Tcp)
            port = self.tcp.server_address[1]
            try:
                self.udp = socketserver.ThreadingUDPServer(("127.0.0.1", port), Udp)
                break
            except OSError:
                self.tcp.server_close()
        else:
            raise OSError("no port free for both UDP and TCP")
        self.port = port

    def answer(self, wire: bytes) -> bytes:
        try:
            message = dns.message.from_wire(wire, keyring=self.keyring)
        except (dns.tsig.BadSignature, dns.tsig.PeerError, dns.message.UnknownTSIGKey,
                dns.tsig.BadTime):
            plain = dns.message.from_wire(wire, keyring=False)  # type: ignore[arg-type]
            response = dns.message.make_response(plain)
            response.set_rcode(dns.rcode.NOTAUTH)
            with self.lock:
                self.refused += 1
            return response.to_wire()
        response = dns.message.make_response(message)
        if message.opcode() == dns.opcode.UPDATE:
            if not message.had_tsig:
                response.set_rcode(dns.rcode.REFUSED)
                with self.lock:
                    self.refused += 1
                return response.to_wire()
            self._apply(message)
            return response.to_wire()
        response.flags |= 0x0400  # AA
        question = message.question[0]
        asked = str(question.name).rstrip(".").lower()
        with self.lock:
            values = sorted(self.txt.get(asked, ()))
            cname = self.cnames.get(asked)
        if cname is not None and question.rdtype in (dns.rdatatype.TXT, dns.rdatatype.CNAME):
            response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "CNAME",
                                                       cname + "."))
        elif question.rdtype == dns.rdatatype.TXT and values:
            rrset = dns.rrset.from_text(question.name, 60, "IN", "TXT",
                                        *[f'"{v}"' for v in values])
            response.answer.append(rrset)
        return response.to_wire()

    def _apply(self, message: Any) -> None:
        with self.lock:
            for rrset in message.update:
                name = str(rrset.name).rstrip(".").lower()
                if rrset.rdtype != dns.rdatatype.TXT:
                    continue
                deleting = getattr(rrset, "deleting", None)
                values = {b"".join(item.strings).decode() for item in rrset}
                if deleting is None:
                    self.txt.setdefault(name, set()).update(values)
                elif deleting == dns.rdataclass.ANY:
                    self.txt.pop(name, None)
                else:
                    self.txt.get(name, set()).difference_update(values)
                    if not self.txt.get(name):
                        self.txt.pop(name, None)

    def __enter__(self) -> DnsServer:
        for server in (self.udp, self.tcp):
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        for server in (self.udp, self.tcp):
            server.shutdown()
            server.server_close()
