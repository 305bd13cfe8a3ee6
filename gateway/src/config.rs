//! Gateway settings, from `PIXMILL_*` environment variables.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use pixmill_shared::config::{Common, ConfigError, env_checked, env_or};

use crate::{
    admission::Bounds,
    auth::AuthMode,
    custom_ops::CustomOps,
    fair_share::DEFAULT_WINDOW,
    jobs::MAX_WAIT_SECS,
    jwt::{
        DEFAULT_LEEWAY_SECS, DEFAULT_TENANT_CLAIM, JwtKeys, JwtSecret, JwtSettings, MAX_LEEWAY_SECS,
    },
    links::LinkKeys,
    maintenance::Upkeep,
    store::DatabaseUrl,
    tenants::{DEFAULT_MAX_INFLIGHT, Defaults, Rate, default_burst},
    webhooks::WebhookSettings,
};

/// Everything the gateway needs. Defaults work on one machine with `make run`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Broker, data folder, topology and limits, shared with the workers.
    pub common: Common,
    /// `PIXMILL_HTTP_ADDR`: where the API and upload page listen.
    pub http_addr: SocketAddr,
    /// `PIXMILL_AUTH`: `required` (every API route needs a key) or `open` (a request
    /// without a key is the tenant `local` with every scope). Default: `open` on a
    /// loopback `PIXMILL_HTTP_ADDR`; on any other address it must be set.
    pub auth: AuthMode,
    /// `PIXMILL_DATABASE_URL`: `sqlite://PATH` (default `<data dir>/pixmill.db`; the
    /// older `PIXMILL_DB_PATH` still names that path) or `postgres://…`.
    pub database_url: DatabaseUrl,
    /// `PIXMILL_RESULT_REDIRECT_SECS`: when above 0, `GET …/result` answers with a
    /// redirect to a presigned URL valid this long, so the object store (or a CDN in
    /// front of it) serves the bytes. Needs an S3 blob store. 0 streams through the
    /// gateway.
    pub result_redirect: Option<Duration>,
    /// `PIXMILL_MANAGEMENT_URL`: RabbitMQ's management API (`http://user:pass@host:15672/api`),
    /// for the queue depth with unacked messages. Default: the AMQP host and
    /// credentials, port 15672 (AMQP port + 10000 off the default port); `off` disables
    /// it, leaving the AMQP figures (no unacked count).
    pub management_url: Option<String>,
    /// `PIXMILL_QUEUE_DEPTH_SECS`: how often the queue depth is read from the broker.
    pub queue_depth_every: Duration,
    /// `PIXMILL_WEBHOOK_SECRET`, `PIXMILL_WEBHOOK_ALLOW`, `PIXMILL_WEBHOOK_TIMEOUT_SECS`,
    /// `PIXMILL_WEBHOOK_MAX_ATTEMPTS`.
    pub webhooks: WebhookSettings,
    /// `PIXMILL_LINK_KEYS`: `kid:secret,…` for signed result links; the first signs, all
    /// verify. Unset: links are off.
    pub link_keys: LinkKeys,
    /// `PIXMILL_JWT_HS256_SECRET` or `PIXMILL_JWT_JWKS`, with `PIXMILL_JWT_ISSUER`,
    /// `PIXMILL_JWT_AUDIENCE`, `PIXMILL_JWT_TENANT_CLAIM` and `PIXMILL_JWT_LEEWAY_SECS`:
    /// bearer JWTs from an identity provider. Neither key setting: JWTs are off.
    pub jwt: Option<JwtSettings>,
    /// `PIXMILL_TENANT_MAX_INFLIGHT`, `PIXMILL_TENANT_RATE`, `PIXMILL_TENANT_BURST`: every
    /// tenant's limits unless it has its own.
    pub tenants: Defaults,
    /// `PIXMILL_FAIR_SHARE` (`on`, `off`) and `PIXMILL_FAIR_SHARE_WINDOW`: each tenant's
    /// window onto the jobs queue; None when off.
    pub fair_share_window: Option<u32>,
    /// `PIXMILL_OPS_FILE`: the custom ops (JSON: name, description, parameter schema),
    /// each served by the workers on its queue `<prefix>.op.<name>`. Unset: none.
    pub ops: CustomOps,
    /// `PIXMILL_MAX_UPLOAD_BYTES`: largest accepted image upload, checked while streaming.
    pub max_upload_bytes: u64,
    /// `PIXMILL_PUBLISH_TIMEOUT_MS`: how long a submit waits for the broker before a 503.
    pub publish_timeout: Duration,
    /// `PIXMILL_REQUEST_TIMEOUT_SECS`: no request (upload or long-poll) runs longer.
    pub request_timeout: Duration,
    /// `PIXMILL_RETENTION_SECS`, `PIXMILL_SWEEP_INTERVAL_SECS`,
    /// `PIXMILL_UNCONFIRMED_AFTER_SECS`, `PIXMILL_STALE_RUNNING_SECS`.
    pub upkeep: Upkeep,
    /// `PIXMILL_HEADER_TIMEOUT_SECS`, `PIXMILL_MAX_CONNECTIONS`,
    /// `PIXMILL_UPLOAD_BUDGET_BYTES`, `PIXMILL_MAX_WATCHERS`: what clients may hold.
    pub bounds: Bounds,
}

impl Settings {
    /// Reads and validates the settings.
    pub fn from_env() -> Result<Self, ConfigError> {
        let common = Common::from_env()?;
        let database_url = database_url(&common)?;
        let result_redirect = result_redirect(&common)?;
        let management_url = management_url(&common)?;
        let http_addr = env_or(
            "PIXMILL_HTTP_ADDR",
            SocketAddr::from(([127, 0, 0, 1], 8080)),
        )?;
        let max_upload_bytes = env_checked("PIXMILL_MAX_UPLOAD_BYTES", 25 * 1024 * 1024u64, |v| {
            if (1..=1 << 30).contains(v) {
                Ok(())
            } else {
                Err("must be between 1 and 1073741824".into())
            }
        })?;
        Ok(Self {
            ops: custom_ops()?,
            bounds: bounds(max_upload_bytes)?,
            auth: auth_mode(http_addr, std::env::var("PIXMILL_AUTH").ok())?,
            http_addr,
            database_url,
            management_url,
            queue_depth_every: secs("PIXMILL_QUEUE_DEPTH_SECS", 5.0)?,
            webhooks: webhook_settings()?,
            link_keys: link_keys()?,
            jwt: jwt_settings()?,
            tenants: tenant_defaults()?,
            fair_share_window: fair_share_window()?,
            result_redirect,
            max_upload_bytes,
            publish_timeout: Duration::from_millis(env_checked(
                "PIXMILL_PUBLISH_TIMEOUT_MS",
                1500u64,
                |v| {
                    if (100..=60_000).contains(v) {
                        Ok(())
                    } else {
                        Err("must be between 100 and 60000".into())
                    }
                },
            )?),
            request_timeout: Duration::from_secs(env_checked(
                "PIXMILL_REQUEST_TIMEOUT_SECS",
                120u64,
                |v| {
                    if *v > MAX_WAIT_SECS {
                        Ok(())
                    } else {
                        Err(format!("must exceed the {MAX_WAIT_SECS} s long-poll limit"))
                    }
                },
            )?),
            upkeep: Upkeep {
                retention: secs("PIXMILL_RETENTION_SECS", 86_400.0)?,
                interval: secs("PIXMILL_SWEEP_INTERVAL_SECS", 30.0)?,
                unconfirmed_after: secs("PIXMILL_UNCONFIRMED_AFTER_SECS", 60.0)?,
                stale_after: secs("PIXMILL_STALE_RUNNING_SECS", 600.0)?,
            },
            common,
        })
    }
}

/// `PIXMILL_OPS_FILE`: the registry of custom ops, when set.
fn custom_ops() -> Result<CustomOps, ConfigError> {
    match std::env::var("PIXMILL_OPS_FILE") {
        Ok(path) if !path.trim().is_empty() => CustomOps::load(std::path::Path::new(path.trim()))
            .map_err(|reason| ConfigError {
                var: "PIXMILL_OPS_FILE".into(),
                value: path,
                reason,
            }),
        _ => Ok(CustomOps::default()),
    }
}

/// `PIXMILL_HEADER_TIMEOUT_SECS`, `PIXMILL_MAX_CONNECTIONS`, `PIXMILL_UPLOAD_BUDGET_BYTES`
/// (at least one upload at `max_upload_bytes`) and `PIXMILL_MAX_WATCHERS`.
fn bounds(max_upload_bytes: u64) -> Result<Bounds, ConfigError> {
    let defaults = Bounds::default();
    Ok(Bounds {
        header_timeout: Duration::from_secs(env_checked(
            "PIXMILL_HEADER_TIMEOUT_SECS",
            defaults.header_timeout.as_secs(),
            |v| {
                if (1..=3600).contains(v) {
                    Ok(())
                } else {
                    Err("must be between 1 and 3600".into())
                }
            },
        )?),
        max_connections: env_checked("PIXMILL_MAX_CONNECTIONS", defaults.max_connections, |v| {
            if (1..=1_000_000).contains(v) {
                Ok(())
            } else {
                Err("must be between 1 and 1000000".into())
            }
        })?,
        upload_budget_bytes: env_checked(
            "PIXMILL_UPLOAD_BUDGET_BYTES",
            defaults.upload_budget_bytes.max(max_upload_bytes),
            |v| {
                if (max_upload_bytes..=1 << 40).contains(v) {
                    Ok(())
                } else {
                    Err(format!(
                        "must be at least PIXMILL_MAX_UPLOAD_BYTES ({max_upload_bytes}), so one upload fits, and at most 1099511627776"
                    ))
                }
            },
        )?,
        max_watchers: env_checked("PIXMILL_MAX_WATCHERS", defaults.max_watchers, |v| {
            if (1..=1_000_000).contains(v) {
                Ok(())
            } else {
                Err("must be between 1 and 1000000".into())
            }
        })?,
    })
}

/// `PIXMILL_TENANT_MAX_INFLIGHT`, `PIXMILL_TENANT_RATE` (0: none) and
/// `PIXMILL_TENANT_BURST` (default: two seconds' worth).
fn tenant_defaults() -> Result<Defaults, ConfigError> {
    let max_inflight = env_checked("PIXMILL_TENANT_MAX_INFLIGHT", DEFAULT_MAX_INFLIGHT, |v| {
        if (1..=10_000_000).contains(v) {
            Ok(())
        } else {
            Err("must be between 1 and 10000000".into())
        }
    })?;
    let per_sec = env_checked("PIXMILL_TENANT_RATE", 0.0f64, |v| {
        if v.is_finite() && (0.0..=1_000_000.0).contains(v) {
            Ok(())
        } else {
            Err("must be a number of submits per second, 0 (no limit) to 1000000".into())
        }
    })?;
    let burst = env_checked("PIXMILL_TENANT_BURST", default_burst(per_sec), |v| {
        if *v >= 1 {
            Ok(())
        } else {
            Err("must be at least 1".into())
        }
    })?;
    Ok(Defaults {
        max_inflight,
        rate: (per_sec > 0.0).then_some(Rate { per_sec, burst }),
    })
}

/// `PIXMILL_FAIR_SHARE` (`on` by default) and `PIXMILL_FAIR_SHARE_WINDOW`.
fn fair_share_window() -> Result<Option<u32>, ConfigError> {
    let on = env_checked("PIXMILL_FAIR_SHARE", "on".to_string(), |v| {
        if v == "on" || v == "off" {
            Ok(())
        } else {
            Err("must be on or off".into())
        }
    })?;
    let window = env_checked("PIXMILL_FAIR_SHARE_WINDOW", DEFAULT_WINDOW, |v| {
        if (1..=1_000_000).contains(v) {
            Ok(())
        } else {
            Err("must be between 1 and 1000000".into())
        }
    })?;
    Ok((on == "on").then_some(window))
}

/// `PIXMILL_DATABASE_URL` (or the older `PIXMILL_DB_PATH`), as the gateway reads it.
fn database_url(common: &Common) -> Result<DatabaseUrl, ConfigError> {
    let db_path: PathBuf = env_or("PIXMILL_DB_PATH", common.data_dir.join("pixmill.db"))?;
    env_or("PIXMILL_DATABASE_URL", DatabaseUrl::Sqlite(db_path))
}

/// Only the task store's URL, for `pixmill-gateway keys`, which needs nothing else.
pub fn database_url_from_env() -> Result<DatabaseUrl, ConfigError> {
    database_url(&Common::from_env()?)
}

/// `PIXMILL_AUTH` (`value`), which must be set when the gateway listens beyond loopback.
fn auth_mode(http_addr: SocketAddr, value: Option<String>) -> Result<AuthMode, ConfigError> {
    let value = value.unwrap_or_default();
    if value.trim().is_empty() && !http_addr.ip().is_loopback() {
        return Err(ConfigError {
            var: "PIXMILL_AUTH".into(),
            value: String::new(),
            reason: format!(
                "it must be set because PIXMILL_HTTP_ADDR={http_addr} is not a loopback \
                 address: without keys anyone who reaches the gateway could read, cancel \
                 and submit every tenant's jobs. Set PIXMILL_AUTH=required to need API keys \
                 (create them with `pixmill-gateway keys create`), or PIXMILL_AUTH=open if \
                 something in front of the gateway already decides who may call it"
            ),
        });
    }
    match value.trim() {
        "" => Ok(AuthMode::Open),
        set => set.parse().map_err(|reason| ConfigError {
            var: "PIXMILL_AUTH".into(),
            value: set.into(),
            reason,
        }),
    }
}

/// `PIXMILL_RESULT_REDIRECT_SECS`: presigned redirects, which need an S3 blob store.
fn result_redirect(common: &Common) -> Result<Option<Duration>, ConfigError> {
    let redirect_secs = env_checked("PIXMILL_RESULT_REDIRECT_SECS", 0u64, |v| {
        if *v <= 7 * 86_400 {
            Ok(())
        } else {
            Err("must be at most 604800 (7 days, the S3 presigning limit)".into())
        }
    })?;
    if redirect_secs > 0 && !matches!(common.blob_url, pixmill_shared::BlobUrl::S3 { .. }) {
        return Err(ConfigError {
            var: "PIXMILL_RESULT_REDIRECT_SECS".into(),
            value: redirect_secs.to_string(),
            reason: format!(
                "presigned redirects need an S3 blob store (PIXMILL_BLOB_URL=s3://…), not {}",
                common.blob_url
            ),
        });
    }
    Ok((redirect_secs > 0).then(|| Duration::from_secs(redirect_secs)))
}

/// `PIXMILL_MANAGEMENT_URL`: given, derived from the AMQP URL, or `off`.
fn management_url(common: &Common) -> Result<Option<String>, ConfigError> {
    let management: String = env_or("PIXMILL_MANAGEMENT_URL", String::new())?;
    Ok(match management.as_str() {
        "" => crate::queue_depth::management_url_for(&common.amqp_url),
        "off" => None,
        url if url.starts_with("http://") || url.starts_with("https://") => Some(url.into()),
        other => {
            return Err(ConfigError {
                var: "PIXMILL_MANAGEMENT_URL".into(),
                value: other.into(),
                reason: "expected http(s)://user:password@host:port/api, or off".into(),
            });
        }
    })
}

/// `PIXMILL_WEBHOOK_SECRET`, None when unset or empty: all that
/// `pixmill-gateway webhook-secret` needs.
pub fn webhook_secret_from_env() -> Result<Option<String>, ConfigError> {
    Ok(Some(env_or("PIXMILL_WEBHOOK_SECRET", String::new())?).filter(|s| !s.is_empty()))
}

/// `PIXMILL_WEBHOOK_*`.
fn webhook_settings() -> Result<WebhookSettings, ConfigError> {
    let list: String = env_or("PIXMILL_WEBHOOK_ALLOW", String::new())?;
    let allow: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect();
    for entry in &allow {
        crate::webhooks::guard::allow_entry(entry).map_err(|reason| ConfigError {
            var: "PIXMILL_WEBHOOK_ALLOW".into(),
            value: list.clone(),
            reason: format!("{reason} (entries are host, host:port or [ipv6]:port)"),
        })?;
    }
    Ok(WebhookSettings {
        secret: webhook_secret_from_env()?,
        allow,
        timeout: secs("PIXMILL_WEBHOOK_TIMEOUT_SECS", 5.0)?,
        max_attempts: env_checked("PIXMILL_WEBHOOK_MAX_ATTEMPTS", 8u32, |v| {
            if (1..=50).contains(v) {
                Ok(())
            } else {
                Err("must be between 1 and 50".into())
            }
        })?,
        ca_certs: webhook_ca_certs()?,
    })
}

/// `PIXMILL_WEBHOOK_CA_FILE`: a PEM file of CA certificates trusted for https callbacks
/// in addition to the system's store; unset trusts the system's only.
fn webhook_ca_certs() -> Result<Vec<reqwest::Certificate>, ConfigError> {
    let var = "PIXMILL_WEBHOOK_CA_FILE";
    let path: String = env_or(var, String::new())?;
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let fail = |reason: String| ConfigError {
        var: var.into(),
        value: path.clone(),
        reason,
    };
    let pem = pixmill_shared::amqp::read_ca_file(std::path::Path::new(&path)).map_err(fail)?;
    reqwest::Certificate::from_pem_bundle(pem.as_bytes())
        .map_err(|e| fail(format!("not a PEM certificate bundle: {e}")))
}

/// `PIXMILL_LINK_KEYS`. Read here rather than with `env_or`, whose errors quote the
/// value: these errors show the key ids only.
fn link_keys() -> Result<LinkKeys, ConfigError> {
    const VAR: &str = "PIXMILL_LINK_KEYS";
    let text = std::env::var(VAR).unwrap_or_default();
    LinkKeys::parse(&text).map_err(|reason| ConfigError {
        var: VAR.into(),
        value: text
            .split(',')
            .filter(|e| !e.trim().is_empty())
            .map(|e| match e.split_once(':') {
                Some((kid, _)) => format!("{}:<secret>", kid.trim()),
                // No key id: the whole entry may be a secret.
                None => "<secret>".into(),
            })
            .collect::<Vec<_>>()
            .join(","),
        reason,
    })
}

/// `PIXMILL_JWT_*`: `None` unless `PIXMILL_JWT_HS256_SECRET` or `PIXMILL_JWT_JWKS` is set
/// (not both). The secret is read directly, so no error quotes it; a JWK set file is
/// read and checked now, so a bad one stops the gateway at start-up.
fn jwt_settings() -> Result<Option<JwtSettings>, ConfigError> {
    let secret = match std::env::var(JWT_SECRET) {
        Ok(secret) => secret,
        Err(std::env::VarError::NotPresent) => String::new(),
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(config_error(
                JWT_SECRET,
                "<secret>",
                "must be UTF-8 text".into(),
            ));
        }
    };
    let jwks: String = env_or(JWT_JWKS, String::new())?;
    let keys = jwt_keys(secret, &jwks)?;
    let issuer: String = env_or("PIXMILL_JWT_ISSUER", String::new())?;
    let audience: String = env_or("PIXMILL_JWT_AUDIENCE", String::new())?;
    let tenant_claim: String = env_checked(
        "PIXMILL_JWT_TENANT_CLAIM",
        DEFAULT_TENANT_CLAIM.to_string(),
        |c| {
            if c.len() <= 64 && !c.chars().any(|ch| ch.is_control() || ch.is_whitespace()) {
                Ok(())
            } else {
                Err("expected a claim name (at most 64 characters, no spaces)".into())
            }
        },
    )?;
    let leeway = env_checked("PIXMILL_JWT_LEEWAY_SECS", DEFAULT_LEEWAY_SECS, |v| {
        if *v <= MAX_LEEWAY_SECS {
            Ok(())
        } else {
            Err(format!("must be at most {MAX_LEEWAY_SECS}"))
        }
    })?;
    Ok(keys.map(|keys| JwtSettings {
        keys,
        issuer: Some(issuer).filter(|i| !i.is_empty()),
        audience: Some(audience).filter(|a| !a.is_empty()),
        tenant_claim,
        leeway,
    }))
}

const JWT_SECRET: &str = "PIXMILL_JWT_HS256_SECRET";
const JWT_JWKS: &str = "PIXMILL_JWT_JWKS";

fn config_error(var: &str, value: &str, reason: String) -> ConfigError {
    ConfigError {
        var: var.into(),
        value: value.into(),
        reason,
    }
}

/// The JWT keys from `PIXMILL_JWT_HS256_SECRET` and `PIXMILL_JWT_JWKS` (empty: unset).
fn jwt_keys(secret: String, jwks: &str) -> Result<Option<JwtKeys>, ConfigError> {
    Ok(match (secret.is_empty(), jwks) {
        (true, "") => None,
        (false, "") => Some(JwtKeys::Hs256(
            JwtSecret::new(secret.into_bytes())
                .map_err(|r| config_error(JWT_SECRET, "<secret>", r))?,
        )),
        (false, _) => {
            return Err(config_error(
                JWT_SECRET,
                "<secret>",
                format!("set either {JWT_SECRET} or {JWT_JWKS}, not both"),
            ));
        }
        (true, url) if url.starts_with("https://") => Some(JwtKeys::JwksUrl(url.into())),
        (true, url) if url.contains("://") => {
            return Err(config_error(
                JWT_JWKS,
                url,
                "expected an https:// URL or a file path (plain http is not accepted)".into(),
            ));
        }
        (true, path) => {
            let file = PathBuf::from(path);
            crate::jwt::check_jwks_file(&file).map_err(|r| config_error(JWT_JWKS, path, r))?;
            Some(JwtKeys::JwksFile(file))
        }
    })
}

/// A positive number of seconds (fractions allowed).
fn secs(var: &str, default: f64) -> Result<Duration, ConfigError> {
    let value = env_checked(var, default, |v| {
        if v.is_finite() && *v > 0.0 && *v <= 31_536_000.0 {
            Ok(())
        } else {
            Err("must be a number of seconds above 0 (at most a year)".into())
        }
    })?;
    Ok(Duration::from_secs_f64(value))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn auth_must_be_chosen_beyond_loopback() {
        let loopback: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let v6_loopback: SocketAddr = "[::1]:8080".parse().expect("addr");
        let public: SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        let set = |v: &str| Some(v.to_string());
        assert_eq!(auth_mode(loopback, None).expect("open"), AuthMode::Open);
        assert_eq!(
            auth_mode(v6_loopback, set(" ")).expect("open"),
            AuthMode::Open
        );
        assert_eq!(
            auth_mode(loopback, set("required")).expect("set"),
            AuthMode::Required
        );
        assert_eq!(
            auth_mode(public, set("required")).expect("set"),
            AuthMode::Required
        );
        assert_eq!(auth_mode(public, set("open")).expect("set"), AuthMode::Open);
        let refused = auth_mode(public, None)
            .expect_err("must be set")
            .to_string();
        assert!(refused.contains("PIXMILL_AUTH"), "{refused}");
        assert!(refused.contains("not a loopback address"), "{refused}");
        assert!(auth_mode(loopback, set("maybe")).is_err());
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn jwt_keys_are_one_of_a_secret_or_a_jwk_set() {
        assert_eq!(jwt_keys(String::new(), "").unwrap(), None);
        assert!(matches!(
            jwt_keys(SECRET.into(), "").unwrap(),
            Some(JwtKeys::Hs256(_))
        ));
        assert_eq!(
            jwt_keys(String::new(), "https://idp.example/jwks").unwrap(),
            Some(JwtKeys::JwksUrl("https://idp.example/jwks".into()))
        );
        let both = jwt_keys(SECRET.into(), "https://idp.example/jwks").unwrap_err();
        assert_eq!(both.var, JWT_SECRET);
        assert!(both.reason.contains("not both"), "{}", both.reason);
        let short = jwt_keys("short".into(), "").unwrap_err();
        assert_eq!(short.var, JWT_SECRET);
        // The secret is never quoted.
        assert!(!format!("{both:?} {short:?}").contains("0123456789"));
        assert_eq!(
            jwt_keys(String::new(), "http://idp.example/jwks")
                .unwrap_err()
                .var,
            JWT_JWKS
        );
        let missing = jwt_keys(String::new(), "/nonexistent/jwks.json").unwrap_err();
        assert_eq!(missing.var, JWT_JWKS);
        assert!(missing.reason.contains("cannot read"), "{}", missing.reason);
    }
}
