"""Watch listeners: one TLS handshake per endpoint, what it serves, checked.

``targets`` turns what a user names (host:port, CIDR ranges with port lists,
files, the inventory) into endpoints; ``engine`` runs the handshakes with
bounded concurrency and checks each chain; ``output`` renders a table, JSON
or CSV; ``metrics`` exposes the results to Prometheus.
"""
