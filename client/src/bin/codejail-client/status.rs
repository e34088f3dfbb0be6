//! `codejail-client status`: the broker's mode, layers and load, as a table or JSON;
//! the exit code says whether every required layer holds.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use codejail_client::{json, ClientConfig};

use crate::fail;

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Print the status as one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `codejail-client status`.
pub(crate) async fn status(socket: PathBuf, args: StatusArgs) -> ExitCode {
    let report = match codejail_client::status(&ClientConfig::new(socket)).await {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let text = if args.json {
        format!("{}\n", json::status_report(&report))
    } else {
        codejail_protocol::render::status_table(&report)
    };
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        return fail(format!("cannot write the status: {e}"));
    }
    if report.required_layers_hold() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
