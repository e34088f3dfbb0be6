//! Harness for end-to-end tests: starts a real broker on a temporary socket.
