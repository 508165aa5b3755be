"""The pure core: bytes in, objects out. No network, terminal or database here.

Public API (see each module):

- ``load``: ``load_bytes(data, source, password) -> list[LoadedObject]``,
  ``load_files(paths, password) -> list[LoadedObject]``
- ``bundle``: ``assemble(objects) -> Bundle``
- ``checks``: ``check_bundle(bundle, hosts, expiry_warn_days, now) -> list[Finding]``
- ``names``: ``covers(cert, host)``, ``why_not_covered(cert, host)``,
  ``host_matches(pattern, host, kind)``, ``certificate_names(cert)`` (display)
- ``export``: ``export_bundle(bundle, fmt, password) -> bytes``
- ``profiles``: ``TargetProfile``, ``OVOC_PROFILE``, ``SBC_PROFILE``, ``render_target``
- ``keygen``: ``generate_private_key(key_type)``, ``build_csr(...)``
- ``quiet``: ``quiet_crypto_warnings()`` / ``@quietly``: the parsing library's
  warnings never reach the user's terminal
"""
