//! The start-up self-test: one real run through the normal path, checking that the
//! layers the report claims actually hold (its own pid namespace with our init as
//! PID 1, the inner run uid, a /proc that shows only the run).

use std::collections::BTreeMap;

use codejail_protocol::Exec;
use tokio::sync::mpsc;

use super::Shared;
use crate::run::{self, Output};

/// What the probe prints when the jail holds.
const EXPECTED: &str = "2 1000 ['1', '2']";

const PROBE: &str = "import os\nprint(os.getpid(), os.getuid(), sorted(p for p in os.listdir('/proc') if p.isdigit()))\n";

/// Run the probe; `Err` says what did not hold.
pub async fn probe(shared: &Shared) -> Result<(), String> {
    if !shared.settings.commands.contains_key("python") {
        return Err("no `python` command configured to probe with".into());
    }
    let exec = Exec {
        command: "python".into(),
        code: Some(PROBE.as_bytes().to_vec()),
        limits: [("REALTIME".to_string(), 10u64), ("CPU".to_string(), 5u64)]
            .into_iter()
            .filter(|(k, _)| {
                k.parse()
                    .ok()
                    .and_then(|n| shared.settings.limits.ceilings.get(&n))
                    .is_none()
            })
            .collect::<BTreeMap<_, _>>(),
        slug: Some("self-test".into()),
        ..Exec::default()
    };
    let (spec, _) = super::handler::prepare(shared, exec).map_err(|r| r.1)?;
    let (tx, mut rx) = mpsc::channel(64);
    let collect = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some(chunk) = rx.recv().await {
            match chunk {
                Output::Stdout(b) => out.extend(b),
                Output::Stderr(b) => err.extend(b),
            }
        }
        (out, err)
    };
    let (fin, (out, err)) = tokio::join!(run::execute(spec, tx, std::future::pending()), collect);
    let fin = fin.map_err(|e| e.to_string())?;
    let out = String::from_utf8_lossy(&out);
    if fin.status != 0 || out.trim() != EXPECTED {
        return Err(format!(
            "probe run gave status {} stdout {:?} stderr {:?}; expected {EXPECTED:?}",
            fin.status,
            out.trim(),
            String::from_utf8_lossy(&err).trim()
        ));
    }
    Ok(())
}
