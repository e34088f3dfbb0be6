//! Listener, peer authentication and per-connection handling.
