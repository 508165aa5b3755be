"""The lab: a CA, OVOC and SBCs simulated on loopback for the demo and the tests.

Never imported by the core (pki, drivers, estate).
"""
