//! Session tests: bytes in, bytes out, no socket.
