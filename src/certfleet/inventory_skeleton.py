"""The inventory that ``certfleet init`` writes: every table, commented."""

SKELETON = """\
# certfleet inventory: the certificates of the estate and the devices serving them.
# No secret ever goes in this file: passwords are references resolved at run time,
#   "env:VAR"                 an environment variable
#   "keyring:SERVICE/USER"    the OS keyring (keyring set SERVICE USER)
#   "file:PATH"               the first line of a file (keep it 0600)
#   "prompt"                  asked on the terminal
# Each table is checked when certfleet reads the file; errors name the line.

[settings]
concurrency = 8          # devices deployed in parallel
expiry_warn_days = 30    # status/check warn when fewer days are left

# One table per certificate. `certfleet csr NAME` makes the key and CSR;
# `certfleet import NAME FILE...` stores what the CA sent back.
[certificates.wildcard]
cn = "*.example.com"
sans = ["*.example.com", "example.com"]
key_type = "rsa2048"                 # rsa2048, rsa3072, rsa4096, ec-p256, ec-p384
# organization = "Example Ltd"
# key_passphrase = "env:CERTFLEET_KEY_PASSPHRASE"   # encrypts the key in the state store

# Defaults apply to every device; [defaults.sbc] / [defaults.ovoc] to one kind.
[defaults.sbc]
user = "Admin"
password = "env:SBC_PASSWORD"

[defaults.ovoc]
user = "acems"
password = "env:OVOC_ACEMS_PASSWORD"
root_password = "env:OVOC_ROOT_PASSWORD"
keystore_password = "env:OVOC_KEYSTORE_PASSWORD"   # answers EmsServerManager's prompt

# The OVOC appliance: SFTP + SSH as acems, su to root, EmsServerManager.
[devices.ovoc]
kind = "ovoc"
address = "ovoc.example.com"
ssh_port = 22
https_port = 443
certificate = "wildcard"
# ssh_host_key = "ssh-ed25519 AAAA..."   # the host key (or a known_hosts file path)
listeners = [443]
tags = ["core"]

# A Mediant SBC: REST API over HTTPS, one or more TLS contexts.
[devices.sbc1]
kind = "sbc"
address = "sbc1.example.com"
port = 443
certificate = "wildcard"
tls_contexts = [0]
# tls_pin = "sha256:..."                 # pin of the management certificate (or ca_file)
# x509_strict = false                    # with ca_file: accept a certificate without AKI/SKI
listeners = [443, "sbc1.example.com:5061"]
tags = ["sbc", "site-a"]
"""
