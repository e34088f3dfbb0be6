//! What the fuzz targets share: the broker settings the request target checks against
//! (also the config target's seed), and the seed inputs `examples/gen_seeds.rs` writes.

use std::sync::LazyLock;

use codejail_broker::config::{FileConfig, Settings};
use codejail_protocol::Mode;

/// A production-shape config: two commands, defaults, ceilings and a named context,
/// so that every branch of the limit resolution is reachable.
pub const SAMPLE_CONFIG: &str = r#"
allowed_uids = [1000, 1001]
allowed_gids = [2000]
max_running = 4
max_queue = 16
max_frame = 33554432
shutdown_grace_secs = 5
tmpfs_mount = "/tmp"
apparmor_profile = "codejail-sandbox"

[socket]
path = "/run/codejail/broker.sock"
mode = "0660"

[commands.python]
bin = "/usr/bin/python3"
ro_paths = ["/opt/sandbox"]

[commands.other]
bin = "/usr/bin/env"
args = ["-i"]
env = { PATH = "/usr/bin:/bin", DATA = "$TMPDIR/data" }
allow_exec = true

[limits.defaults]
CPU = 2
REALTIME = 4
NPROC = 10
VMEM = 536870912

[limits.ceilings]
CPU = 10
REALTIME = 20
NPROC = 50
VMEM = 1073741824

[limits.contexts."course-v1:Org+Course+Run"]
CPU = 5
REALTIME = 7

[cgroup]
mode = "auto"
required = false
unlimited_pids = 256
"#;

/// [`SAMPLE_CONFIG`] as settings: what the request target checks requests against.
pub static SETTINGS: LazyLock<Settings> = LazyLock::new(|| {
    let cfg: FileConfig = toml::from_str(SAMPLE_CONFIG).expect("SAMPLE_CONFIG parses");
    Settings::from_config(&cfg, Mode::Confined).expect("SAMPLE_CONFIG is valid")
});
