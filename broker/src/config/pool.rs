//! `[pool.<command>]`: the warm pool (`run::pool`), validated.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::*;

/// `[pool.<command>]` as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Warm jails kept ready for the command (0 = none).
    pub size: Option<u32>,
    /// Modules a warm jail's interpreter imports while it waits, e.g. `["numpy"]`.
    #[serde(default)]
    pub preimport: Vec<String>,
    /// Seconds a warm jail may wait for a request before it is replaced (default 600).
    pub max_age_secs: Option<u64>,
    /// Build the warm jails by forking them from a zygote, an interpreter started once
    /// with the preimports, instead of starting an interpreter in each (default false;
    /// `run::pool::zygote`).
    pub fork_server: Option<bool>,
    /// With `fork_server`: forks one zygote serves before it is replaced (default 1000).
    pub zygote_max_forks: Option<u64>,
    /// With `fork_server`: seconds one zygote serves before it is replaced (default 600).
    pub zygote_max_age_secs: Option<u64>,
}

/// One command's warm pool, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// Warm jails kept ready.
    pub size: u32,
    /// Modules imported ahead.
    pub preimport: Vec<String>,
    /// How long a warm jail may wait before it is replaced.
    pub max_age: Duration,
    /// Whether the warm jails are forked from a zygote.
    pub fork_server: bool,
    /// How long a zygote serves (with `fork_server`).
    pub zygote: ZygoteLife,
}

/// How long one zygote serves before it is replaced: its runs share its str-hash seed
/// and address layout (fixed at an interpreter's start), and this bounds how many and
/// for how long (docs/architecture.md, "Fork server").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZygoteLife {
    /// Forks (`zygote_max_forks`).
    pub max_forks: u64,
    /// Time since it started (`zygote_max_age_secs`).
    pub max_age: Duration,
}

impl Default for ZygoteLife {
    fn default() -> Self {
        ZygoteLife {
            max_forks: DEFAULT_ZYGOTE_MAX_FORKS,
            max_age: Duration::from_secs(DEFAULT_ZYGOTE_MAX_AGE_SECS),
        }
    }
}

/// Largest pool per command: each warm jail holds an interpreter's memory and a uid.
pub const MAX_POOL_SIZE: u32 = 64;
/// Default [`PoolSpec::max_age`].
pub const DEFAULT_POOL_MAX_AGE_SECS: u64 = 600;
/// Default [`ZygoteLife::max_forks`].
pub const DEFAULT_ZYGOTE_MAX_FORKS: u64 = 1000;
/// Default [`ZygoteLife::max_age`].
pub const DEFAULT_ZYGOTE_MAX_AGE_SECS: u64 = 600;

/// The pools by command, checked against the configured commands.
pub(super) fn pools_from_config(
    cfg: &BTreeMap<String, PoolConfig>,
    commands: &BTreeMap<String, CommandSpec>,
) -> Result<BTreeMap<String, PoolSpec>, ConfigError> {
    let mut pools = BTreeMap::new();
    for (command, p) in cfg {
        let key = format!("pool.{command}");
        if !commands.contains_key(command) {
            return Err(invalid(
                &key,
                format!(
                    "names no configured command (configured: {})",
                    commands.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let size = p.size.unwrap_or(0);
        if size > MAX_POOL_SIZE {
            return Err(invalid(
                format!("{key}.size"),
                format!("must be at most {MAX_POOL_SIZE}"),
            ));
        }
        for module in &p.preimport {
            check_module_name(module).map_err(|why| invalid(format!("{key}.preimport"), why))?;
        }
        let max_age_secs = p.max_age_secs.unwrap_or(DEFAULT_POOL_MAX_AGE_SECS);
        if max_age_secs == 0 {
            return Err(invalid(format!("{key}.max_age_secs"), "must be at least 1"));
        }
        let fork_server = p.fork_server.unwrap_or(false);
        let zygote = zygote_life(&key, p, fork_server)?;
        if size > 0 {
            pools.insert(
                command.clone(),
                PoolSpec {
                    size,
                    preimport: p.preimport.clone(),
                    max_age: Duration::from_secs(max_age_secs),
                    fork_server,
                    zygote,
                },
            );
        }
    }
    Ok(pools)
}

/// `zygote_max_forks` and `zygote_max_age_secs` of the pool at `key`, checked: at least
/// 1, and only where there is a zygote.
fn zygote_life(key: &str, p: &PoolConfig, fork_server: bool) -> Result<ZygoteLife, ConfigError> {
    for (name, value) in [
        ("zygote_max_forks", p.zygote_max_forks),
        ("zygote_max_age_secs", p.zygote_max_age_secs),
    ] {
        match value {
            Some(_) if !fork_server => {
                return Err(invalid(
                    format!("{key}.{name}"),
                    "applies only with fork_server = true",
                ))
            }
            Some(0) => return Err(invalid(format!("{key}.{name}"), "must be at least 1")),
            _ => {}
        }
    }
    Ok(ZygoteLife {
        max_forks: p.zygote_max_forks.unwrap_or(DEFAULT_ZYGOTE_MAX_FORKS),
        max_age: Duration::from_secs(p.zygote_max_age_secs.unwrap_or(DEFAULT_ZYGOTE_MAX_AGE_SECS)),
    })
}

/// A module name as Python's `import` takes it: dotted identifiers (ASCII here, which
/// is what goes on the hook's protocol line unquoted).
pub fn check_module_name(module: &str) -> Result<(), String> {
    let ok = !module.is_empty()
        && module.split('.').all(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{module:?} is not a module name (dotted identifiers, e.g. numpy or matplotlib.pyplot)"
        ))
    }
}
