//! codejail-client: talk to the codejail broker.
