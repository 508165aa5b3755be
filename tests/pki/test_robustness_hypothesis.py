"""Property tests: broken input never makes the loader or the assembler raise a foreign error.

Seeds are valid files of every format the loader reads, generated at run
time; hypothesis truncates, flips, inserts, splices and re-armours them. The
only exception allowed out is certfleet's own, with a one-line message that
never shows the password. The assembler, fed any subset of several chains in
any order, returns a chain in issuing order or refuses with certfleet's error.
"""

from __future__ import annotations

import base64
import functools
import itertools
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _tools import in_ci
from certfleet.errors import CertfleetError
from certfleet.lab.ca import Issued, LabCA
from certfleet.pki.bundle import assemble
from certfleet.pki.checks import check_bundle
from certfleet.pki.load import load_bytes
from certfleet.pki.model import Bundle, LoadedObject, cert_sha256, spki_sha256

# The right password (no message may ever show it) and a wrong one.
PASSWORD = b"Ov0c-s3cret-pfx"
WRONG_PASSWORD = b"not-the-password"
PASSWORD_TEXT = PASSWORD.decode()

# One profile for this module only (tests/conftest.py is not ours to change):
# no deadline (key derivation is slow by design), derandomized and without an
# example database in CI so that a run there is reproducible.
settings.register_profile(
    "certfleet-robustness",
    settings(database=None) if in_ci() else settings(),
    deadline=None,
    derandomize=in_ci(),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
PROFILE = settings.get_profile("certfleet-robustness")
# CERTFLEET_FUZZ_SCALE=10 runs ten times the examples (a longer hunt, by hand).
FUZZ_SCALE = float(os.environ.get("CERTFLEET_FUZZ_SCALE", "1") or 1)


def scaled(examples: int) -> int:
    return max(1, int(examples * FUZZ_SCALE))


# --- seeds: one valid file of each format ------------------------------------


@dataclass(frozen=True)
class Material:
    """Keys and certificates the seeds are cut from."""

    issued: Issued
    rsa_issued: Issued
    ec_key: ec.EllipticCurvePrivateKey
    rsa_key: rsa.RSAPrivateKey


@functools.cache
def material() -> Material:
    ca = LabCA(name="Robust", intermediates=1)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return Material(
        issued=ca.issue(["sbc1.example.com"], key=ec_key),
        rsa_issued=ca.issue(["ovoc.example.com"], key=rsa_key),
        ec_key=ec_key,
        rsa_key=rsa_key,
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _bag_attributes_chain(issued: Issued, key: rsa.RSAPrivateKey) -> bytes:
    """What ``openssl pkcs12 -nodes`` prints: Bag Attributes and subject lines before blocks."""
    parts: list[bytes] = [
        b"Bag Attributes\n    localKeyID: 01 00 00 00 \n    friendlyName: ovoc\n"
        b"Key Attributes: <No Attributes>\n",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    ]
    for cert in (issued.leaf, *issued.chain, issued.root):
        parts.append(
            b"Bag Attributes\n    friendlyName: "
            + cert.subject.rfc4514_string().encode()
            + b"\nsubject="
            + cert.subject.rfc4514_string().encode()
            + b"\nissuer="
            + cert.issuer.rfc4514_string().encode()
            + b"\n"
        )
        parts.append(_pem(cert))
    return b"".join(parts).replace(b"\n", b"\r\n")


def _jks(issued: Issued, key: rsa.RSAPrivateKey) -> bytes:
    import jks  # pyjks: the keystore format Java tools hand over

    pkcs8 = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    entry = jks.PrivateKeyEntry.new("ovoc", [_der(issued.leaf), *map(_der, issued.chain)], pkcs8)
    trusted = jks.TrustedCertEntry.new("root", _der(issued.root))
    store = jks.KeyStore.new("jks", [entry, trusted])
    data: bytes = store.saves(PASSWORD_TEXT)
    return data


@functools.cache
def seeds() -> dict[str, bytes]:
    """Valid inputs of every format, keyed by a name hypothesis prints on failure."""
    m = material()
    leaf, chain, root = m.issued.leaf, m.issued.chain, m.issued.root
    enc = serialization.BestAvailableEncryption(PASSWORD)
    none = serialization.NoEncryption()
    pem, der = serialization.Encoding.PEM, serialization.Encoding.DER
    pkcs8, trad = serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL
    triple_des = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(2048)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())
        .build(PASSWORD)
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(leaf.subject)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("sbc1.example.com")]), critical=False
        )
        .sign(m.ec_key, hashes.SHA256())
    )
    rsa_leaf = m.rsa_issued.leaf
    return {
        "pem-cert": _pem(leaf),
        "der-cert": _der(leaf),
        "pem-fullchain-and-key": m.issued.fullchain_pem
        + m.issued.root_pem
        + m.ec_key.private_bytes(pem, pkcs8, none),
        "pem-chain-bag-attributes": _bag_attributes_chain(m.rsa_issued, m.rsa_key),
        "pkcs12-aes": pkcs12.serialize_key_and_certificates(
            b"sbc1", m.ec_key, leaf, [*chain, root], enc
        ),
        "pkcs12-3des": pkcs12.serialize_key_and_certificates(
            b"ovoc", m.rsa_key, rsa_leaf, [*m.rsa_issued.chain, root], triple_des
        ),
        "pkcs12-no-password": pkcs12.serialize_key_and_certificates(
            None, m.ec_key, leaf, list(chain), none
        ),
        "pkcs7-pem": pkcs7.serialize_certificates([leaf, *chain, root], pem),
        "pkcs7-der": pkcs7.serialize_certificates([root, *chain], der),
        "pkcs8-encrypted-pem": m.ec_key.private_bytes(pem, pkcs8, enc),
        "pkcs8-encrypted-der": m.rsa_key.private_bytes(der, pkcs8, enc),
        "pem-encrypted-rsa": m.rsa_key.private_bytes(pem, trad, enc),
        "pkcs1-pem": m.rsa_key.private_bytes(pem, trad, none),
        "sec1-pem": m.ec_key.private_bytes(pem, trad, none),
        "pkcs8-pem": m.ec_key.private_bytes(pem, pkcs8, none),
        "pkcs8-der": m.rsa_key.private_bytes(der, pkcs8, none),
        "sec1-der": m.ec_key.private_bytes(der, trad, none),
        "ed25519-pkcs8": ed25519.Ed25519PrivateKey.generate().private_bytes(pem, pkcs8, none),
        "csr-pem": csr.public_bytes(pem),
        "csr-der": csr.public_bytes(der),
        "jks": _jks(m.rsa_issued, m.rsa_key),
    }


# The DER seeds and the PEM label each one travels under, for re-armouring.
DER_LABELS = {
    "der-cert": "CERTIFICATE",
    "pkcs12-aes": "PKCS12",
    "pkcs12-3des": "PKCS12",
    "pkcs7-der": "PKCS7",
    "pkcs8-encrypted-der": "ENCRYPTED PRIVATE KEY",
    "pkcs8-der": "PRIVATE KEY",
    "sec1-der": "EC PRIVATE KEY",
    "csr-der": "CERTIFICATE REQUEST",
}
PEM_LABELS = (
    "CERTIFICATE",
    "TRUSTED CERTIFICATE",
    "X509 CERTIFICATE",
    "PKCS7",
    "CERTIFICATE CHAIN",
    "CERTIFICATE REQUEST",
    "NEW CERTIFICATE REQUEST",
    "PRIVATE KEY",
    "ENCRYPTED PRIVATE KEY",
    "RSA PRIVATE KEY",
    "EC PRIVATE KEY",
    "DSA PRIVATE KEY",
    "PKCS12",
    "PUBLIC KEY",
    "X509 CRL",
    "OPENSSH PRIVATE KEY",
    "EC PARAMETERS",
)
SEED_NAMES = (
    "pem-cert",
    "der-cert",
    "pem-fullchain-and-key",
    "pem-chain-bag-attributes",
    "pkcs12-aes",
    "pkcs12-3des",
    "pkcs12-no-password",
    "pkcs7-pem",
    "pkcs7-der",
    "pkcs8-encrypted-pem",
    "pkcs8-encrypted-der",
    "pem-encrypted-rsa",
    "pkcs1-pem",
    "sec1-pem",
    "pkcs8-pem",
    "pkcs8-der",
    "sec1-der",
    "ed25519-pkcs8",
    "csr-pem",
    "csr-der",
    "jks",
)


# --- the property -------------------------------------------------------------


def assert_loads_or_refuses(data: bytes, password: bytes | None) -> None:
    """load_bytes returns LoadedObjects or raises a CertfleetError that reads well."""
    try:
        objects = load_bytes(data, source="fuzzed.pem", password=password)
    except CertfleetError as exc:
        message = exc.message
        assert message.strip(), f"{type(exc).__name__} with an empty message"
        assert "\n" not in message and "\r" not in message, f"message is not one line: {message!r}"
        for text in (message, exc.hint or ""):
            assert PASSWORD_TEXT not in text, f"the password shows in {text!r}"
        return
    assert objects, "load_bytes returned nothing instead of raising"
    assert all(isinstance(obj, LoadedObject) for obj in objects)
    assert [obj.index for obj in objects] == list(range(len(objects)))


# --- strategies ---------------------------------------------------------------

seed_names = st.sampled_from(SEED_NAMES)
passwords = st.sampled_from([None, PASSWORD, WRONG_PASSWORD])


@st.composite
def truncated(draw: st.DrawFn) -> bytes:
    data = seeds()[draw(seed_names)]
    return data[: draw(st.integers(0, len(data)))]


def _mutate(draw: st.DrawFn, data: bytes, max_edits: int = 6) -> bytes:
    """Apply 1..max_edits flips, replacements, insertions and deletions to ``data``."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, max_edits))):
        op = draw(st.sampled_from(("flip", "replace", "insert", "delete")))
        pos = draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "insert" or not buf:
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "flip":
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "replace":
            buf[pos] = draw(st.sampled_from((0x00, 0x30, 0x80, 0x81, 0x82, 0x84, 0xFF)))
        else:
            del buf[pos : pos + draw(st.integers(1, 16))]
    return bytes(buf)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    return _mutate(draw, seeds()[draw(seed_names)])


def _armour(label: str, der: bytes, headers: Sequence[str] = (), newline: bytes = b"\n") -> bytes:
    b64 = base64.b64encode(der)
    lines = [f"-----BEGIN {label}-----".encode(), *(h.encode() for h in headers)]
    if headers:
        lines.append(b"")
    lines += [b64[i : i + 64] for i in range(0, len(b64), 64)]
    lines.append(f"-----END {label}-----".encode())
    return newline.join(lines) + newline


@st.composite
def rearmoured(draw: st.DrawFn) -> bytes:
    """A DER seed, mutated or truncated, then PEM-armoured: reaches the parsers behind PEM."""
    name = draw(st.sampled_from(sorted(DER_LABELS)))
    der = seeds()[name]
    if draw(st.booleans()):
        der = der[: draw(st.integers(0, len(der)))]
    else:
        der = _mutate(draw, der, max_edits=3)
    label = draw(st.sampled_from((DER_LABELS[name], DER_LABELS[name], *PEM_LABELS)))
    return _armour(label, der, newline=draw(st.sampled_from((b"\n", b"\r\n"))))


@st.composite
def spliced(draw: st.DrawFn) -> bytes:
    first, second = seeds()[draw(seed_names)], seeds()[draw(seed_names)]
    return first[: draw(st.integers(0, len(first)))] + second[draw(st.integers(0, len(second))) :]


@st.composite
def armoured_noise(draw: st.DrawFn) -> bytes:
    """Random text, headers and base64 inside PEM armour, with text around it."""
    invented = st.from_regex(r"[A-Z0-9][A-Z0-9 ]{0,20}", fullmatch=True)
    label = draw(st.sampled_from(PEM_LABELS) | invented)
    body_kind = draw(st.sampled_from(("base64", "text", "empty", "der-prefix")))
    if body_kind == "base64":
        body = base64.b64encode(draw(st.binary(max_size=600)))
    elif body_kind == "text":
        body = draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    elif body_kind == "empty":
        body = b""
    else:
        der = seeds()[draw(st.sampled_from(sorted(DER_LABELS)))]
        body = base64.b64encode(der[: draw(st.integers(0, 64))] + draw(st.binary(max_size=64)))
    headers = draw(
        st.sampled_from(
            (
                [],
                [
                    "Proc-Type: 4,ENCRYPTED",
                    "DEK-Info: AES-256-CBC,00112233445566778899AABBCCDDEEFF",
                ],
                ["Proc-Type: 4,ENCRYPTED", "DEK-Info: DES-EDE3-CBC,0011"],
                ["Proc-Type: 4,ENCRYPTED"],
                ["Comment: exported"],
            )
        )
    )
    block = f"-----BEGIN {label}-----\n".encode()
    if headers:
        block += "\n".join(headers).encode() + b"\n\n"
    block += body + b"\n"
    if draw(st.booleans()):
        block += f"-----END {label}-----\n".encode()
    before = draw(st.text(max_size=40)).encode("utf-8", "surrogatepass")
    after = draw(st.text(max_size=40)).encode("utf-8", "surrogatepass")
    return before + block * draw(st.integers(1, 3)) + after


# --- loader properties --------------------------------------------------------


def test_seeds_are_valid() -> None:
    """Every seed loads with the password: the mutations start from real files."""
    for name in SEED_NAMES:
        objects = load_bytes(seeds()[name], source=name, password=PASSWORD)
        assert objects, name


@settings(PROFILE, max_examples=scaled(800))
@given(data=truncated(), password=passwords)
def test_truncated_input_raises_only_certfleet_errors(data: bytes, password: bytes | None) -> None:
    """A file cut at any byte loads what is left or raises a CertfleetError."""
    assert_loads_or_refuses(data, password)


@settings(PROFILE, max_examples=scaled(2000))
@given(data=mutated(), password=passwords)
def test_mutated_input_raises_only_certfleet_errors(data: bytes, password: bytes | None) -> None:
    """Flipped, replaced, inserted and deleted bytes never raise a foreign exception."""
    assert_loads_or_refuses(data, password)


@settings(PROFILE, max_examples=scaled(1500))
@given(data=rearmoured(), password=passwords)
def test_rearmoured_der_raises_only_certfleet_errors(data: bytes, password: bytes | None) -> None:
    """Broken DER inside PEM armour, under its own label or another, gives a CertfleetError."""
    assert_loads_or_refuses(data, password)


@settings(PROFILE, max_examples=scaled(800))
@given(data=spliced(), password=passwords)
def test_spliced_inputs_raise_only_certfleet_errors(data: bytes, password: bytes | None) -> None:
    """The head of one file glued to the tail of another never raises a foreign exception."""
    assert_loads_or_refuses(data, password)


@settings(PROFILE, max_examples=scaled(800))
@given(data=st.binary(max_size=2048), password=passwords)
def test_random_bytes_raise_only_certfleet_errors(data: bytes, password: bytes | None) -> None:
    """Random bytes are refused with a CertfleetError."""
    assert_loads_or_refuses(data, password)


@settings(PROFILE, max_examples=scaled(1500))
@given(data=armoured_noise(), password=passwords)
def test_armoured_noise_raises_only_certfleet_errors(data: bytes, password: bytes | None) -> None:
    """Random text inside PEM armour (any label, headers, missing END) gives a CertfleetError."""
    assert_loads_or_refuses(data, password)


# --- assembler properties -----------------------------------------------------


@dataclass(frozen=True)
class Estate:
    """Loaded objects of several chains, and the truth about each leaf."""

    objects: tuple[LoadedObject, ...]
    leaves: tuple[Issued, ...]
    ca_objects: tuple[LoadedObject, ...]  # roots and intermediates of every chain
    noise: tuple[LoadedObject, ...]  # an unrelated self-signed certificate


def _load(name: str, data: bytes) -> list[LoadedObject]:
    return load_bytes(data, source=name)


@functools.cache
def estate() -> Estate:
    """Three CAs (0, 1 and 2 intermediates), four leaves, two keys, duplicates, noise."""
    cas = [
        LabCA(name="Flat", intermediates=0),
        LabCA(name="One", intermediates=1),
        LabCA(name="Two", intermediates=2),
    ]
    leaves = (
        cas[0].issue(["flat.example.com"], key_type="ec-p256"),
        cas[1].issue(["one.example.com"], key_type="ec-p256"),
        cas[1].issue(["one-b.example.com"], key_type="ec-p256"),
        cas[2].issue(["two.example.com"], key_type="ec-p256"),
    )
    objects: list[LoadedObject] = []
    ca_objects: list[LoadedObject] = []
    for number, ca in enumerate(cas):
        for position, cert in enumerate((*ca.intermediate_certs, ca.root)):
            loaded = _load(f"ca{number}-{position}.pem", _pem(cert))
            ca_objects += loaded
    for number, issued in enumerate(leaves):
        objects += _load(f"leaf{number}.crt", issued.leaf_pem)
        if number in (1, 3):
            objects += _load(f"leaf{number}.key", issued.key_pem())
    # The same intermediate as a CA delivers it twice (in the chain file and alone).
    duplicates = _load("dup.pem", _pem(cas[2].intermediate_certs[0]))
    stranger = LabCA(name="Stranger", intermediates=0)
    noise = tuple(_load("stranger.pem", _pem(stranger.root)))
    return Estate(
        objects=(*objects, *ca_objects, *duplicates, *noise),
        leaves=leaves,
        ca_objects=tuple(ca_objects),
        noise=noise,
    )


def _fingerprints(certs: Sequence[x509.Certificate]) -> list[str]:
    return [cert_sha256(cert) for cert in certs]


def assert_bundle_is_consistent(bundle: Bundle, objects: Sequence[LoadedObject]) -> None:
    """Leaf, chain and root come from the input and each one is issued by the next."""
    given_certs = {
        cert_sha256(obj.value)
        for obj in objects
        if obj.type == "certificate" and isinstance(obj.value, x509.Certificate)
    }
    fullchain = [bundle.leaf, *bundle.chain]
    used = _fingerprints(fullchain) + ([cert_sha256(bundle.root)] if bundle.root else [])
    assert set(used) <= given_certs, "the bundle holds a certificate that was not given"
    assert len(set(used)) == len(used), "a certificate appears twice in leaf/chain/root"
    for lower, upper in itertools.pairwise(fullchain):
        lower.verify_directly_issued_by(upper)  # raises when out of order
    if bundle.root is not None:
        fullchain[-1].verify_directly_issued_by(bundle.root)
        bundle.root.verify_directly_issued_by(bundle.root)
    if bundle.private_key is not None:
        assert spki_sha256(bundle.private_key) == spki_sha256(bundle.leaf), "key of another cert"
    assert not set(_fingerprints(bundle.unrelated)) & set(used), "unrelated overlaps the chain"


def _call_assemble(objects: Sequence[LoadedObject]) -> Bundle | None:
    try:
        return assemble(list(objects))
    except CertfleetError as exc:
        assert exc.message.strip() and "\n" not in exc.message, repr(exc.message)
        return None


@settings(PROFILE, max_examples=scaled(800))
@given(choice=st.data())
def test_assemble_any_subset_in_any_order(choice: st.DataObject) -> None:
    """assemble() on any subset/permutation returns a well-ordered bundle or a CertfleetError."""
    objects = estate().objects
    picked = choice.draw(st.lists(st.sampled_from(range(len(objects))), unique=True, max_size=12))
    subset = choice.draw(st.permutations([objects[i] for i in picked]))
    bundle = _call_assemble(subset)
    if bundle is not None:
        assert_bundle_is_consistent(bundle, subset)


@settings(PROFILE, max_examples=scaled(400))
@given(choice=st.data(), which=st.sampled_from((0, 1, 2, 3)), with_key=st.booleans())
def test_assemble_orders_one_leaf_chain_exactly(
    choice: st.DataObject, which: int, with_key: bool
) -> None:
    """One leaf with its chain, shuffled among other CAs' certificates, comes back in order."""
    issued = estate().leaves[which]
    own = [issued.leaf_pem, *(_pem(c) for c in issued.chain), issued.root_pem]
    objects = [obj for number, data in enumerate(own) for obj in _load(f"own{number}.pem", data)]
    if with_key and issued.key is not None:
        objects += _load("own.key", issued.key_pem())
    own_ids = set(_fingerprints([issued.leaf, *issued.chain, issued.root]))
    strangers = [
        obj
        for obj in (*estate().ca_objects, *estate().noise)
        if isinstance(obj.value, x509.Certificate) and cert_sha256(obj.value) not in own_ids
    ]
    extra = choice.draw(st.lists(st.sampled_from(strangers), max_size=6))
    shuffled = choice.draw(st.permutations([*objects, *extra]))
    bundle = assemble(shuffled)
    assert_bundle_is_consistent(bundle, shuffled)
    assert cert_sha256(bundle.leaf) == cert_sha256(issued.leaf)
    assert _fingerprints(bundle.chain) == _fingerprints(issued.chain)
    assert bundle.root is not None and cert_sha256(bundle.root) == cert_sha256(issued.root)
    assert (bundle.private_key is not None) == (with_key and issued.key is not None)


def test_assemble_random_pile_is_reproducible_per_seed() -> None:
    """A fixed shuffle of the whole estate assembles the same way twice (no hidden randomness)."""
    objects = list(estate().objects)
    random.Random(1).shuffle(objects)
    first, second = _call_assemble(objects), _call_assemble(list(objects))
    if first is None or second is None:
        assert first is None and second is None
        return
    assert cert_sha256(first.leaf) == cert_sha256(second.leaf)
    assert _fingerprints(first.chain) == _fingerprints(second.chain)


@st.composite
def damaged_certificates(draw: st.DrawFn) -> bytes:
    """A certificate of the estate with 1-4 bytes of its to-be-signed part overwritten.

    Same-length edits keep the DER frame intact, so many still load: the
    damage sits in names, extensions and algorithms that cryptography only
    parses when they are first read.
    """
    which = draw(st.sampled_from(("leaf", "chain", "root")))
    issued = estate().leaves[3]
    cert = {"leaf": issued.leaf, "chain": issued.chain[0], "root": issued.root}[which]
    der = bytearray(_der(cert))
    tbs_end = 4 + len(cert.tbs_certificate_bytes)
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(8, tbs_end - 1))
        der[pos] = draw(st.integers(0, 255))
    return bytes(der)


@settings(PROFILE, max_examples=scaled(600))
@given(damaged=damaged_certificates(), choice=st.data())
def test_damaged_certificates_that_load_assemble_and_check_cleanly(
    damaged: bytes, choice: st.DataObject
) -> None:
    """A certificate that loads but has damaged fields never breaks assemble or check_bundle."""
    try:
        loaded = load_bytes(damaged, source="damaged.der")
    except CertfleetError:
        return  # refused at load time: the loader property above covers the message
    issued = estate().leaves[3]
    rest = [issued.leaf_pem, *(_pem(c) for c in issued.chain), issued.root_pem]
    others = [obj for n, data in enumerate(rest) for obj in _load(f"good{n}.pem", data)]
    if issued.key is not None:
        others += _load("good.key", issued.key_pem())
    objects = choice.draw(st.permutations([*loaded, *others]))
    bundle = _call_assemble(objects)
    if bundle is None:
        return
    try:
        findings = check_bundle(bundle, hosts=("two.example.com",))
    except CertfleetError as exc:
        assert exc.message.strip() and "\n" not in exc.message, repr(exc.message)
        return
    assert all(finding.message for finding in findings)
