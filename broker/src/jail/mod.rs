//! The jail stage: a separate, single-threaded exec (`codejail-jail`) that reads a
//! [`plan::Plan`] and builds the run's jail. Never touches tokio.

pub mod plan;
