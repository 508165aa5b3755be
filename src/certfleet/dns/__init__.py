"""DNS-01 record providers and the propagation check.

A provider publishes and removes ``_acme-challenge`` TXT records
(:class:`~certfleet.dns.providers.TxtRecord`); :mod:`.propagation` waits
until every authoritative nameserver (or the configured resolvers) serves
them. Providers: ``rfc2136`` (dynamic update with TSIG, dnspython),
``lexicon:NAME`` (dns-lexicon, optional), ``hook`` (any script),
``challtestsrv`` (Pebble's test DNS server) and ``manual`` (a person, on a
terminal).
"""
