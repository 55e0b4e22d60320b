"""The tunnel's protocol without I/O: the wire format, the session and its cryptography.

* :mod:`tunlab.proto.framing` - frames as bytes: encoder and a checking decoder;
* :mod:`tunlab.proto.session` - one connection's hello exchange, key proof and data;
* :mod:`tunlab.proto.crypto` - pre-shared keys, key derivation, sealing and opening.

Threads and sockets live in :mod:`tunlab.tunnel`. Import the module that does the job; this package
exports nothing itself.
"""

__all__: list[str] = []
