"""Pre-shared-key authentication and encryption for the tunnel, as sans-IO building blocks.

The handshake (driven by :class:`tunlab.proto.session.Session`) works like this:

1. Each side puts 32 fresh random bytes (``psk_nonce``) into its HELLO and offers the ``psk``
   feature. A side that has a key refuses a peer that does not offer ``psk`` and vice versa:
   there is no way to talk a keyed endpoint down to the unauthenticated teaching mode.
2. Both hash the transcript: the client's and the server's HELLO payloads exactly as sent.
3. HKDF-SHA256 over the PSK, salted with both nonces and bound to the transcript hash, yields
   four fresh 32-byte keys per connection: client->server and server->client AEAD keys and one
   HMAC key per role for the key proof.
4. The client sends an AUTH frame (0x10): HMAC-SHA256 over its role and the transcript hash.
   The server checks it and only then answers with its own AUTH; the client checks that.
   Nobody reports ``Established`` (so nobody forwards a packet) before the peer's proof checked.
5. From then on every frame is SEALED (0x11): an 8-byte counter, then the AEAD of (inner
   frame type + inner payload) under the direction's key, nonce = the counter, with the frame
   header as associated data. The receiver demands exactly the next counter, so a replayed,
   reordered, dropped or altered frame ends the connection.

The AEAD is negotiated in the HELLOs. Each side lists the ciphers it supports, most preferred
first, under ``ciphers`` (AES-256-GCM first only where the CPU has AES instructions, else
ChaCha20-Poly1305 first), and the server picks: its most preferred cipher that the client
offers (:func:`choose_cipher`). The HELLOs cross at the same time, so both sides compute the
pick from the two lists; the lists are part of the transcript that the keys and both key
proofs are bound to, so a man in the middle who strips AES-GCM from an offer (a downgrade)
breaks the key proof. A peer that names no ciphers (tunlab before this negotiation) speaks
ChaCha20-Poly1305.

Nothing here touches a socket or a device: :class:`Sealer` and :class:`Opener` turn payloads
into frames and back; :func:`load_psk` reads a key file with the checks a user needs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tunlab.errors import TunlabError
from tunlab.proto.framing import (
    DEFAULT_MAX_PAYLOAD,
    HEADER_SIZE,
    EncodeError,
    FrameType,
    frame_header,
)

__all__ = ["auth_tag", "auth_tag_valid", "check_psk", "choose_cipher", "Cipher",
           "CIPHERS_INFO_KEY", "COUNTER_SIZE", "cpu_has_aes", "DEFAULT_CIPHER", "derive_keys",
           "GENERATE_HINT", "load_psk", "MAX_COUNTER", "MAX_OFFERED_CIPHERS", "MAX_PSK_BYTES",
           "MIN_PSK_BYTES", "NONCE_INFO_KEY", "NONCE_SIZE", "offered_ciphers", "Opener",
           "preferred_ciphers", "PSK_FEATURE", "SEAL_OVERHEAD", "SEALED_FRAME_OVERHEAD", "Sealer",
           "SealError", "SecureFrameType", "SessionKeys", "TAG_SIZE", "transcript_hash"]

PSK_FEATURE = "psk"
NONCE_INFO_KEY = "psk_nonce"
CIPHERS_INFO_KEY = "ciphers"
MAX_OFFERED_CIPHERS = 8
NONCE_SIZE = 32
MIN_PSK_BYTES = 16
MAX_PSK_BYTES = 4096
COUNTER_SIZE = 8
TAG_SIZE = 16
# Bytes a sealed frame adds to its inner payload: counter, inner type, AEAD tag.
SEAL_OVERHEAD = COUNTER_SIZE + 1 + TAG_SIZE
# Bytes a whole SEALED frame adds to its plaintext (inner type + payload): header, counter, tag.
SEALED_FRAME_OVERHEAD = HEADER_SIZE + COUNTER_SIZE + TAG_SIZE
MAX_COUNTER = 2**64 - 1

GENERATE_HINT = "head -c 32 /dev/urandom | base64 > FILE && chmod 600 FILE"

_LABEL = b"tunlab psk v1"
_PACKET_TYPES = (FrameType.DATA, FrameType.GSO_DATA)


class SecureFrameType(IntEnum):
    """The extension frame types (0x10-0x1f range of :mod:`tunlab.proto.framing`) used here."""

    AUTH = 0x10
    SEALED = 0x11


class Cipher(Enum):
    """An AEAD a keyed session may seal with; the value is its name in the HELLO."""

    AES_256_GCM = "aes-256-gcm"
    CHACHA20_POLY1305 = "chacha20-poly1305"


# What a peer that names no ciphers speaks (every tunlab before the negotiation).
DEFAULT_CIPHER = Cipher.CHACHA20_POLY1305
_AEAD: dict[Cipher, type[AESGCM] | type[ChaCha20Poly1305]] = {
    Cipher.AES_256_GCM: AESGCM, Cipher.CHACHA20_POLY1305: ChaCha20Poly1305}


def cpu_has_aes(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU flags in ``cpuinfo`` include ``aes`` (x86 AES-NI; on arm64, whose
    ``Features`` line says ``aes``, too)."""
    try:
        with open(cpuinfo) as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return "aes" in value.split()
    except OSError:
        pass
    return False


def preferred_ciphers(has_aes: bool | None = None) -> tuple[Cipher, ...]:
    """The ciphers this side offers, most preferred first: AES-256-GCM leads only with AES
    instructions (without them it is slow and its table lookups leak timing)."""
    if has_aes is None:
        has_aes = cpu_has_aes()
    if has_aes:
        return (Cipher.AES_256_GCM, Cipher.CHACHA20_POLY1305)
    return (Cipher.CHACHA20_POLY1305, Cipher.AES_256_GCM)


def offered_ciphers(info: dict[str, object]) -> tuple[Cipher, ...] | None:
    """The ciphers a HELLO's ``info`` offers, in its order; unknown names are skipped.

    No ``ciphers`` entry means the default cipher alone; None means a malformed offer (not a
    list of names, or more than :data:`MAX_OFFERED_CIPHERS` of them).
    """
    if CIPHERS_INFO_KEY not in info:
        return (DEFAULT_CIPHER,)
    names = info[CIPHERS_INFO_KEY]
    if (not isinstance(names, list) or len(names) > MAX_OFFERED_CIPHERS
            or not all(isinstance(name, str) for name in names)):
        return None
    known = {cipher.value: cipher for cipher in Cipher}
    return tuple(known[name] for name in names if name in known)


def choose_cipher(client: Sequence[Cipher], server: Sequence[Cipher]) -> Cipher | None:
    """The server's pick: its most preferred cipher that the client offers (None: none)."""
    return next((cipher for cipher in server if cipher in client), None)


class SealError(Exception):
    """A sealed frame that must not be accepted; ``reason`` is a short stats key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def check_psk(psk: bytes) -> None:
    """Raise :class:`ValueError` unless ``psk`` is a usable key (16 to 4096 bytes)."""
    if not isinstance(psk, bytes | bytearray):
        raise ValueError("the pre-shared key must be bytes")
    if len(psk) < MIN_PSK_BYTES:
        raise ValueError(f"the pre-shared key has {len(psk)} bytes; at least {MIN_PSK_BYTES} "
                         "are needed")
    if len(psk) > MAX_PSK_BYTES:
        raise ValueError(f"the pre-shared key has {len(psk)} bytes; at most {MAX_PSK_BYTES}")


def load_psk(path: str | os.PathLike[str]) -> bytes:
    """Read a pre-shared key file and return the key bytes (surrounding whitespace stripped).

    Refused, each with a :class:`TunlabError` that says how to fix it: a missing or unreadable
    file, something that is not a regular file, a file that group or others may access (the
    fix is ``chmod 600 FILE``), an empty key, and a key shorter than 16 bytes. The file's whole
    text is the key; ``head -c 32 /dev/urandom | base64`` makes a good one.
    """
    name = os.fspath(path)
    generate = GENERATE_HINT.replace("FILE", name)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise TunlabError(f"pre-shared key file {name} does not exist",
                          f"create one: `{generate}`") from None
    except PermissionError:
        raise TunlabError(f"no permission to read the pre-shared key file {name}",
                          "run as the user that owns it (or root)") from None
    except OSError as exc:
        raise TunlabError(f"cannot open the pre-shared key file {name}: {exc.strerror}",
                          "check the path") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise TunlabError(f"pre-shared key file {name} is a directory",
                              "pass the key file itself")
        if not stat.S_ISREG(info.st_mode):
            raise TunlabError(f"pre-shared key file {name} is not a regular file",
                              "pass a file that holds the key")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise TunlabError(
                f"pre-shared key file {name} is accessible by group or others "
                f"(mode {mode:04o}); refusing to use a key others can read",
                f"chmod 600 {name}")
        data = os.read(fd, MAX_PSK_BYTES + 2)
    finally:
        os.close(fd)
    key = data.strip()
    if not key:
        raise TunlabError(f"pre-shared key file {name} is empty", f"put a key in it: `{generate}`")
    if len(key) < MIN_PSK_BYTES:
        raise TunlabError(f"the key in {name} is too short ({len(key)} bytes, at least "
                          f"{MIN_PSK_BYTES})", f"make a longer one: `{generate}`")
    if len(key) > MAX_PSK_BYTES:
        raise TunlabError(f"the key in {name} is too long (over {MAX_PSK_BYTES} bytes)",
                          f"make a shorter one: `{generate}`")
    return key


def transcript_hash(client_hello: bytes, server_hello: bytes) -> bytes:
    """SHA-256 over both HELLO payloads (client first), length-prefixed so none can shift."""
    digest = hashlib.sha256(_LABEL + b" transcript\0")
    for payload in (client_hello, server_hello):
        digest.update(struct.pack("!I", len(payload)))
        digest.update(payload)
    return digest.digest()


@dataclass(frozen=True)
class SessionKeys:
    """Fresh keys for one connection, derived from the PSK, both nonces and the transcript."""

    client_to_server: bytes
    server_to_client: bytes
    client_auth: bytes
    server_auth: bytes

    def sending(self, role: str) -> bytes:
        """The AEAD key ``role`` seals with."""
        return self.client_to_server if role == "client" else self.server_to_client

    def receiving(self, role: str) -> bytes:
        """The AEAD key ``role`` opens with."""
        return self.server_to_client if role == "client" else self.client_to_server

    def auth(self, role: str) -> bytes:
        """The HMAC key ``role`` proves key possession with."""
        return self.client_auth if role == "client" else self.server_auth


def derive_keys(psk: bytes, client_nonce: bytes, server_nonce: bytes,
                transcript: bytes) -> SessionKeys:
    """HKDF-SHA256(psk, salt = client nonce + server nonce, info = label + transcript hash)."""
    material = HKDF(algorithm=hashes.SHA256(), length=128, salt=client_nonce + server_nonce,
                    info=_LABEL + b" keys\0" + transcript).derive(bytes(psk))
    return SessionKeys(material[0:32], material[32:64], material[64:96], material[96:128])


def auth_tag(keys: SessionKeys, role: str, transcript: bytes) -> bytes:
    """The AUTH frame payload ``role`` sends: HMAC-SHA256 over its role and the transcript."""
    return hmac.new(keys.auth(role), _LABEL + b" auth\0" + role.encode() + b"\0" + transcript,
                    hashlib.sha256).digest()


def auth_tag_valid(keys: SessionKeys, role: str, transcript: bytes,
                   tag: bytes | memoryview) -> bool:
    """Constant-time check of the AUTH payload that ``role`` (the peer) sent."""
    return hmac.compare_digest(auth_tag(keys, role, transcript), tag)


def _nonce(counter: int) -> bytes:
    return b"\0\0\0\0" + counter.to_bytes(COUNTER_SIZE, "big")


class Sealer:
    """Seals inner frames for one direction; the counter makes every nonce unique.

    Frames must reach the wire in the order they were sealed: seal and send from one thread
    (or under one lock), because the receiver demands consecutive counters.
    """

    def __init__(self, key: bytes, cipher: Cipher = DEFAULT_CIPHER) -> None:
        self.cipher = cipher
        self._aead = _AEAD[cipher](key)
        self._lock = threading.Lock()
        self.counter = 0

    def seal(self, inner_type: int, *inner: bytes | bytearray | memoryview) -> bytes:
        """A whole SEALED frame (header included) carrying ``inner_type`` and the ``inner``
        payload, given as one or more pieces (for example a virtio-net header and a packet)."""
        plaintext = b"".join((bytes((inner_type,)), *inner))
        out = bytearray(len(plaintext) + SEALED_FRAME_OVERHEAD)
        return bytes(self.seal_into(out, plaintext))

    def seal_into(self, out: bytearray, plaintext: bytes | bytearray | memoryview) -> memoryview:
        """:meth:`seal` without copies, for the data path.

        ``plaintext`` is the inner frame type byte followed by the inner payload, contiguous
        (the pump reads each packet into its buffer one byte in, so that this byte fits in
        front of it); the whole SEALED frame is written into the start of ``out``, which must
        hold ``len(plaintext) + SEALED_FRAME_OVERHEAD`` bytes, and returned as a view of it.
        """
        length = COUNTER_SIZE + TAG_SIZE + len(plaintext)
        if length > DEFAULT_MAX_PAYLOAD:
            raise EncodeError(f"payload of {len(plaintext) - 1} bytes does not fit a sealed "
                              f"frame (limit {DEFAULT_MAX_PAYLOAD - SEAL_OVERHEAD})")
        header = frame_header(SecureFrameType.SEALED, length)
        with self._lock:
            counter = self.counter
            if counter >= MAX_COUNTER:
                raise EncodeError("frame counter exhausted: reconnect for fresh keys")
            self.counter = counter + 1
        frame = memoryview(out)[:HEADER_SIZE + length]
        frame[:HEADER_SIZE] = header
        body = HEADER_SIZE + COUNTER_SIZE
        frame[HEADER_SIZE:body] = counter.to_bytes(COUNTER_SIZE, "big")
        self._aead.encrypt_into(_nonce(counter), plaintext, header, frame[body:])
        return frame


class Opener:
    """Opens SEALED frames of one direction, demanding consecutive counters."""

    def __init__(self, key: bytes, cipher: Cipher = DEFAULT_CIPHER) -> None:
        self.cipher = cipher
        self._aead = _AEAD[cipher](key)
        self.expected = 0

    def open(self, payload: bytes | bytearray | memoryview, out: memoryview | None = None,
             ) -> tuple[int, bytes | memoryview]:
        """``(inner type, inner payload)`` of a SEALED frame's payload; :class:`SealError` if bad.

        The payload of a DATA or GSO_DATA frame comes back as a view of the decrypted bytes
        (not a copy), anything else as bytes. Without ``out`` the plaintext is new bytes (the
        view stays valid); with ``out`` it is decrypted into the start of ``out``, which must
        hold ``len(payload) - COUNTER_SIZE - TAG_SIZE`` bytes (the view is valid as long as
        ``out`` is not reused).

        Raises with reason ``forged`` (fails authentication: altered, truncated or another key),
        ``replayed`` (authentic but an old counter) or ``reordered`` (authentic but frames
        missing in between).
        """
        if len(payload) < SEAL_OVERHEAD:
            raise SealError("forged", f"sealed frame of {len(payload)} bytes is shorter than "
                            f"the {SEAL_OVERHEAD}-byte minimum")
        view = memoryview(payload)
        counter = int.from_bytes(view[:COUNTER_SIZE], "big")
        header = frame_header(SecureFrameType.SEALED, len(payload))
        try:
            plaintext: bytes | memoryview
            if out is None:
                plaintext = self._aead.decrypt(_nonce(counter), view[COUNTER_SIZE:], header)
            else:
                plaintext = out[:len(view) - COUNTER_SIZE - TAG_SIZE]
                self._aead.decrypt_into(_nonce(counter), view[COUNTER_SIZE:], header, plaintext)
        except InvalidTag:
            raise SealError("forged", "sealed frame failed authentication (altered in transit "
                            "or sealed with another key)") from None
        if counter != self.expected:
            reason = "replayed" if counter < self.expected else "reordered"
            raise SealError(reason, f"sealed frame has counter {counter}, expected "
                            f"{self.expected}")
        self.expected += 1
        # Copying a 64 KiB super-packet out of the plaintext cost about as much as decrypting
        # it (fresh pages are expensive on a nested VM), so packets stay a view.
        if plaintext[0] in _PACKET_TYPES:
            return plaintext[0], memoryview(plaintext)[1:]
        return plaintext[0], bytes(plaintext[1:])

