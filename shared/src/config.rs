//! Reading typed settings from `PIXMILL_*` environment variables.
//!
//! Each binary keeps its own settings struct; these helpers give every variable the same
//! parsing and the same error, which names the variable and what it expected.

use std::{fmt::Display, str::FromStr};

/// A setting that could not be used. Binaries exit with code 64 on it.
///
/// It prints (`Display` and `Debug`) with URL passwords and `password=` parameters
/// masked in the value and the reason (see [`crate::redact::mask_secrets`]), so a typo in
/// `PIXMILL_AMQP_URL` or `PIXMILL_DATABASE_URL` never puts the password in a log.
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: String,
    /// What it held.
    pub value: String,
    /// What was expected instead.
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::redact::mask_secrets;
        write!(
            f,
            "{}={:?} is not valid: {}",
            self.var,
            mask_secrets(&self.value),
            mask_secrets(&self.reason)
        )
    }
}

impl std::fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::redact::mask_secrets;
        f.debug_struct("ConfigError")
            .field("var", &self.var)
            .field("value", &mask_secrets(&self.value))
            .field("reason", &mask_secrets(&self.reason))
            .finish()
    }
}

impl std::error::Error for ConfigError {}

/// Exit code for bad configuration (`EX_USAGE` from sysexits.h).
pub const EXIT_CONFIG: i32 = 64;

/// Default broker URL: the local node `make run` starts, with 10 s heartbeats so a dead
/// peer is noticed in seconds.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=10";

/// Reads `var`, or returns `default` when it is unset or empty.
pub fn env_or<T>(var: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => {
            value.trim().parse().map_err(|e: T::Err| ConfigError {
                var: var.into(),
                value: value.clone(),
                reason: e.to_string(),
            })
        }
        _ => Ok(default),
    }
}

/// Like [`env_or`], and also checks `value` against `valid`, which explains a refusal.
pub fn env_checked<T>(
    var: &str,
    default: T,
    valid: impl FnOnce(&T) -> Result<(), String>,
) -> Result<T, ConfigError>
where
    T: FromStr + Display,
    T::Err: Display,
{
    let value = env_or(var, default)?;
    valid(&value).map_err(|reason| ConfigError {
        var: var.into(),
        value: value.to_string(),
        reason,
    })?;
    Ok(value)
}

/// `PIXMILL_AMQP_CA_FILE`, when set: a readable PEM file with at least one certificate.
pub fn amqp_ca_file() -> Result<Option<std::path::PathBuf>, ConfigError> {
    let var = crate::amqp::CA_FILE_VAR;
    let path: String = env_or(var, String::new())?;
    if path.is_empty() {
        return Ok(None);
    }
    crate::amqp::read_ca_file(std::path::Path::new(&path)).map_err(|reason| ConfigError {
        var: var.into(),
        value: path.clone(),
        reason,
    })?;
    Ok(Some(path.into()))
}

/// The broker URLs from `PIXMILL_AMQP_URL` (one, or a comma-separated list of a
/// cluster's nodes), each with `heartbeat=10` added when it sets none.
pub fn amqp_url() -> Result<String, ConfigError> {
    let list: String = env_or("PIXMILL_AMQP_URL", DEFAULT_AMQP_URL.to_string())?;
    let mut checked = Vec::new();
    for url in crate::amqp::urls(&list) {
        if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
            return Err(ConfigError {
                var: "PIXMILL_AMQP_URL".into(),
                value: list.clone(),
                reason: format!(
                    "{url:?} is not amqp://user:password@host:port/vhost (several URLs are separated by commas)"
                ),
            });
        }
        checked.push(with_heartbeat(url));
    }
    if checked.is_empty() {
        return Err(ConfigError {
            var: "PIXMILL_AMQP_URL".into(),
            value: list,
            reason: "expected amqp://user:password@host:port/vhost".into(),
        });
    }
    Ok(checked.join(","))
}

fn with_heartbeat(url: &str) -> String {
    if url.contains("heartbeat=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&heartbeat=10")
    } else {
        format!("{url}?heartbeat=10")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_is_added_once() {
        assert_eq!(with_heartbeat("amqp://h/%2f"), "amqp://h/%2f?heartbeat=10");
        assert_eq!(
            with_heartbeat("amqp://h/%2f?x=1"),
            "amqp://h/%2f?x=1&heartbeat=10"
        );
        assert_eq!(
            with_heartbeat("amqp://h/%2f?heartbeat=5"),
            "amqp://h/%2f?heartbeat=5"
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        // A name no other test sets, so parallel tests cannot race on it.
        let var = "PIXMILL_TEST_ONLY_NUMBER";
        assert_eq!(env_or(var, 7u32).expect("unset gives default"), 7);
        let err = env_checked(var, 0u32, |v| {
            if *v > 0 {
                Ok(())
            } else {
                Err("must be positive".into())
            }
        })
        .expect_err("0 is refused");
        assert!(err.to_string().contains(var), "{err}");
        assert!(err.to_string().contains("must be positive"), "{err}");
    }

    #[test]
    fn errors_never_print_a_password() {
        let err = ConfigError {
            var: "PIXMILL_AMQP_URL".into(),
            value: "amqps//pixmill:Sup3rSecret@broker:5671/%2f".into(),
            reason: "\"amqps//pixmill:Sup3rSecret@broker:5671/%2f\" is not amqp://…".into(),
        };
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(!shown.contains("Sup3rSecret"), "{shown}");
            assert!(shown.contains("PIXMILL_AMQP_URL"), "{shown}");
            assert!(shown.contains("@broker:5671"), "{shown}");
        }
        let err = ConfigError {
            var: "PIXMILL_DATABASE_URL".into(),
            value: "mysql://app:Sup3rSecret@db/p?password=Sup3rSecret".into(),
            reason: "expected sqlite:// or postgres://".into(),
        };
        assert!(!err.to_string().contains("Sup3rSecret"), "{err}");
    }
}

/// Settings both binaries read, so a gateway and its workers always agree on them.
#[derive(Debug, Clone)]
pub struct Common {
    /// `PIXMILL_AMQP_URL`: the broker, or a comma-separated list of a cluster's nodes
    /// (every client connects to the first that answers and fails over to the next).
    pub amqp_url: String,
    /// `PIXMILL_AMQP_CA_FILE`: CA certificates (PEM) trusted for `amqps://` brokers
    /// besides the system's; checked to be readable here, read by
    /// [`crate::amqp::tls_config`].
    pub amqp_ca_file: Option<std::path::PathBuf>,
    /// `PIXMILL_DATA_DIR`: where the one-machine defaults live (the blob folder and the
    /// gateway's SQLite file), when `PIXMILL_BLOB_URL` / `PIXMILL_DATABASE_URL` are unset.
    pub data_dir: std::path::PathBuf,
    /// `PIXMILL_BLOB_URL`: `file://PATH` (default `<data dir>/blobs`) or
    /// `s3://BUCKET[/PREFIX]` with the `AWS_*` variables.
    pub blob_url: crate::BlobUrl,
    /// `PIXMILL_QUEUE_PREFIX`, `PIXMILL_DELIVERY_LIMIT`, `PIXMILL_MAX_QUEUED`.
    pub topology: crate::Topology,
    /// `PIXMILL_MAX_PIXELS`, `PIXMILL_MAX_SIDE`, `PIXMILL_MAX_STEPS`, `PIXMILL_MAX_SCANS`.
    pub limits: crate::Limits,
}

impl Common {
    /// Reads the shared settings, with defaults that work on one machine.
    pub fn from_env() -> Result<Self, ConfigError> {
        let positive = |v: &u64| {
            if *v > 0 {
                Ok(())
            } else {
                Err("must be at least 1".to_string())
            }
        };
        let defaults = crate::Limits::default();
        let prefix: String = env_checked(
            "PIXMILL_QUEUE_PREFIX",
            crate::topology::DEFAULT_PREFIX.into(),
            |p: &String| {
                if p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    Ok(())
                } else {
                    Err("use letters, digits, '-', '_' and '.' only".into())
                }
            },
        )?;
        let mut topology = crate::Topology::with_prefix(&prefix);
        topology.delivery_limit =
            env_checked("PIXMILL_DELIVERY_LIMIT", topology.delivery_limit, |v| {
                if *v >= 1 {
                    Ok(())
                } else {
                    Err("must be at least 1".into())
                }
            })?;
        topology.max_queued = env_checked("PIXMILL_MAX_QUEUED", topology.max_queued, |v| {
            if *v >= 1 {
                Ok(())
            } else {
                Err("must be at least 1".into())
            }
        })?;
        let data_dir = env_or("PIXMILL_DATA_DIR", std::path::PathBuf::from("var/data"))?;
        let amqp_ca_file = amqp_ca_file()?;
        Ok(Self {
            amqp_url: amqp_url()?,
            amqp_ca_file,
            blob_url: env_or(
                "PIXMILL_BLOB_URL",
                crate::BlobUrl::Folder(data_dir.join("blobs")),
            )?,
            data_dir,
            topology,
            limits: crate::Limits {
                max_pixels: env_checked("PIXMILL_MAX_PIXELS", defaults.max_pixels, positive)?,
                max_side: env_checked("PIXMILL_MAX_SIDE", defaults.max_side, |v| {
                    if (1..=65_535).contains(v) {
                        Ok(())
                    } else {
                        Err("must be between 1 and 65535".into())
                    }
                })?,
                max_steps: env_checked("PIXMILL_MAX_STEPS", defaults.max_steps, |v| {
                    if (1..=1000).contains(v) {
                        Ok(())
                    } else {
                        Err("must be between 1 and 1000".into())
                    }
                })?,
                max_scans: env_checked("PIXMILL_MAX_SCANS", defaults.max_scans, |v| {
                    if (1..=100_000).contains(v) {
                        Ok(())
                    } else {
                        Err("must be between 1 and 100000".into())
                    }
                })?,
            },
        })
    }
}
