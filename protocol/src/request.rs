//! What a client asks after the handshake: a [`Request`], usually an [`Exec`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::FileEntry;

/// Run a program in a fresh jail (upstream's `jail_code`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Exec {
    /// Configured command name, e.g. `python`.
    pub command: String,
    /// The program text, written to `jailed_code` and run; `None` runs `argv[0]`.
    #[serde(with = "serde_bytes")]
    pub code: Option<Vec<u8>>,
    /// Arguments after the program.
    pub argv: Vec<String>,
    /// Files, directories and symlinks copied in (upstream's `files`).
    pub files: Vec<FileEntry>,
    /// `(name, contents)` pairs written at the top of the workspace.
    #[serde(with = "codejail_plan::named_bytes")]
    pub extra_files: Vec<(String, Vec<u8>)>,
    /// The program's standard input.
    #[serde(with = "serde_bytes")]
    pub stdin: Vec<u8>,
    /// Per-request limit values by upstream name (`CPU`, `VMEM`, ...).
    pub limits: BTreeMap<String, u64>,
    /// A named override context (the LMS uses the course id); unknown = no overrides.
    pub limits_context: Option<String>,
    /// A label for logs.
    pub slug: Option<String>,
}

/// A request after the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Request {
    /// Run a program; answered by a stream ending in `Finished` or `Error`.
    Exec(Box<Exec>),
    /// Ask for the broker's status; answered by `Status`.
    Status,
}
