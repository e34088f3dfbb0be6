//! Limit defaults, ceilings and named contexts (docs/contracts.md §4), validated.

use std::collections::BTreeMap;

use codejail_protocol::{LimitName, Limits};

use super::*;

/// Why a request's limits were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Unknown name.
    #[error(transparent)]
    Unknown(#[from] codejail_protocol::limits::UnknownLimit),
    /// Not a possible value of the limit (e.g. NOFILE=0).
    #[error("{0}")]
    OutOfRange(String),
    /// Above the ceiling.
    #[error("limit {name}={value} is above its ceiling of {ceiling}{zero}", zero = if *.value == 0 { " (0 would mean unlimited)" } else { "" })]
    AboveCeiling {
        /// The limit.
        name: LimitName,
        /// The value asked for.
        value: u64,
        /// The configured ceiling.
        ceiling: u64,
    },
}

/// Defaults, ceilings and contexts, validated (docs/contracts.md §4).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LimitPolicy {
    /// Config defaults over upstream's.
    pub defaults: Limits,
    /// Ceilings by limit.
    pub ceilings: BTreeMap<LimitName, u64>,
    /// Named contexts: overrides by limit.
    pub contexts: BTreeMap<String, BTreeMap<LimitName, u64>>,
}

impl LimitPolicy {
    /// Build and validate: names known, defaults and contexts within the ceilings.
    pub fn new(cfg: &LimitsConfig) -> Result<Self, ConfigError> {
        let mut policy = LimitPolicy::default();
        for (k, v) in &cfg.ceilings {
            let name: LimitName = k
                .parse()
                .map_err(|e| invalid(format!("limits.ceilings.{k}"), format!("{e}")))?;
            policy.ceilings.insert(name, *v);
        }
        for (k, v) in &cfg.defaults {
            let name: LimitName = k
                .parse()
                .map_err(|e| invalid(format!("limits.defaults.{k}"), format!("{e}")))?;
            policy.defaults.set(name, *v);
        }
        for (name, value) in policy.defaults.iter() {
            policy
                .check_ceiling(name, value)
                .map_err(|e| invalid(format!("limits.defaults.{name}"), e.to_string()))?;
        }
        for (ctx, values) in &cfg.contexts {
            let mut overrides = BTreeMap::new();
            for (k, v) in values {
                let key = format!("limits.contexts.{ctx:?}.{k}");
                let name: LimitName = k.parse().map_err(|e| invalid(&key, format!("{e}")))?;
                policy
                    .check_ceiling(name, *v)
                    .map_err(|e| invalid(&key, e.to_string()))?;
                overrides.insert(name, *v);
            }
            policy.contexts.insert(ctx.clone(), overrides);
        }
        Ok(policy)
    }

    /// `value` is possible for `name` and within its ceiling.
    fn check_ceiling(&self, name: LimitName, value: u64) -> Result<(), LimitError> {
        name.check_value(value).map_err(LimitError::OutOfRange)?;
        let Some(&ceiling) = self.ceilings.get(&name) else {
            return Ok(());
        };
        let unlimited = value == 0 && name.zero_disables();
        if unlimited || value > ceiling {
            return Err(LimitError::AboveCeiling {
                name,
                value,
                ceiling,
            });
        }
        Ok(())
    }

    /// Effective limits: defaults, then the named context (unknown = no overrides, as
    /// upstream: the LMS passes every course id), then the request's values.
    pub fn resolve(
        &self,
        context: Option<&str>,
        request: &BTreeMap<String, u64>,
    ) -> Result<Limits, LimitError> {
        let mut limits = self.defaults;
        if let Some(overrides) = context.and_then(|c| self.contexts.get(c)) {
            for (name, value) in overrides {
                limits.set(*name, *value);
            }
        }
        for (k, v) in request {
            let name: LimitName = k.parse()?;
            self.check_ceiling(name, *v)?;
            limits.set(name, *v);
        }
        Ok(limits)
    }
}
