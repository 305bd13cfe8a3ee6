//! `pixmill-gateway keys …` and `tenants …`: managing API keys and tenants' limits from
//! the command line, on the task store `PIXMILL_DATABASE_URL` names, also while gateways
//! run on it; and `pixmill-gateway webhook-secret`, a tenant's webhook signing secret.
//!
//! ```text
//! pixmill-gateway keys create --tenant NAME [--scopes jobs:write,jobs:read] [--ttl SECONDS] [--label L]
//! pixmill-gateway keys list [--tenant NAME]
//! pixmill-gateway keys revoke ID
//! pixmill-gateway tenants set NAME [--max-inflight N|default] [--rate PER_SEC|default] [--burst N|default]
//! pixmill-gateway tenants list
//! pixmill-gateway webhook-secret --tenant NAME
//! ```
//!
//! `create` prints the record, then the key alone on the last line: it is shown once.
//! Nothing prints a key's secret again. `webhook-secret` needs only
//! `PIXMILL_WEBHOOK_SECRET`, from which it derives the tenant's secret (the same one
//! `GET /v1/webhooks/secret` answers that tenant), and prints it alone on the last line.

use std::{io::Write, time::Duration};

use clap::{Parser, Subcommand};

use crate::{
    auth::{self, ApiScope, KeyRequest},
    store::{self, ApiKey, DatabaseUrl, TenantLimits},
    tenants::LIMITS_CACHE,
    view::rfc3339,
    webhooks::sign,
};

/// The gateway's command line: no subcommand serves.
#[derive(Debug, Parser)]
#[command(name = "pixmill-gateway", version, about = "pixmill's HTTP gateway")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list and revoke API keys.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Set and list tenants' own limits (quotas and rates).
    Tenants {
        #[command(subcommand)]
        action: TenantsAction,
    },
    /// Print a tenant's webhook signing secret, derived from PIXMILL_WEBHOOK_SECRET.
    WebhookSecret {
        /// The tenant whose deliveries the secret signs, exactly as its keys or tokens
        /// name it.
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantsAction {
    /// Set a tenant's own limits; a limit not given keeps its current value, and
    /// `default` returns it to the gateway's default. Every gateway applies the change
    /// within 2 seconds.
    Set {
        /// The tenant.
        name: String,
        /// Most jobs queued or running at once (default: PIXMILL_TENANT_MAX_INFLIGHT).
        #[arg(long)]
        max_inflight: Option<String>,
        /// Submits per second, per gateway; 0: no limit (default: PIXMILL_TENANT_RATE).
        #[arg(long)]
        rate: Option<String>,
        /// Submits at once above the rate (default: PIXMILL_TENANT_BURST).
        #[arg(long)]
        burst: Option<String>,
    },
    /// List the tenants that have limits of their own.
    List,
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create a key; it is printed once, alone on the last line.
    Create {
        /// The tenant whose jobs the key acts on.
        #[arg(long)]
        tenant: String,
        /// Comma-separated: jobs:write, jobs:read, admin.
        #[arg(long, default_value = "jobs:write,jobs:read")]
        scopes: String,
        /// Seconds until it expires (default: until revoked).
        #[arg(long)]
        ttl: Option<u64>,
        /// A note for people, e.g. where the key is used.
        #[arg(long)]
        label: Option<String>,
    },
    /// List keys (never their secrets).
    List {
        /// Only this tenant's keys.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key by its public id; every gateway refuses it within 2 seconds.
    Revoke {
        /// The public id (the 16 hex digits after `pmk_`).
        id: String,
    },
}

/// Why the command failed, and the exit code that says so.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// Bad arguments or settings: exit 64, like every configuration error.
    #[error("{0}")]
    Usage(String),
    /// The store failed, or there is no such key: exit 1.
    #[error("{0}")]
    Failed(String),
}

impl ManageError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ManageError::Usage(_) => pixmill_shared::config::EXIT_CONFIG,
            ManageError::Failed(_) => 1,
        }
    }
}

/// Runs `keys <action>` against `url`, writing to `out`.
pub async fn keys(
    url: &DatabaseUrl,
    action: KeysAction,
    out: &mut impl Write,
) -> Result<(), ManageError> {
    let scopes = match &action {
        KeysAction::Create { scopes, .. } => {
            Some(ApiScope::parse_list(scopes).map_err(ManageError::Usage)?)
        }
        _ => None,
    };
    let store = store::open_for_keys(url)
        .await
        .map_err(|e| ManageError::Failed(format!("task store {url}: {e}")))?;
    let failed = |e: store::StoreError| ManageError::Failed(e.to_string());
    let write = |e: std::io::Error| ManageError::Failed(format!("writing the output: {e}"));
    match action {
        KeysAction::Create {
            tenant, ttl, label, ..
        } => {
            let request = KeyRequest {
                tenant,
                scopes: scopes.unwrap_or_default(),
                ttl: ttl.map(Duration::from_secs),
                label,
            };
            let (token, record) = auth::issue(&store, request, pixmill_shared::now_ms())
                .await
                .map_err(|e| match e {
                    auth::IssueError::Invalid(why) => ManageError::Usage(why),
                    other => ManageError::Failed(other.to_string()),
                })?;
            describe(&record, out).map_err(write)?;
            writeln!(
                out,
                "the key, shown once (only its hash is stored; revoke it and make another if it is lost):"
            )
            .map_err(write)?;
            writeln!(out, "{token}").map_err(write)?;
        }
        KeysAction::List { tenant } => {
            let keys = store
                .list_api_keys(tenant.as_deref())
                .await
                .map_err(failed)?;
            writeln!(
                out,
                "{:<16}  {:<16}  {:<28}  {:<24}  {:<24}  {:<24}  LABEL",
                "ID", "TENANT", "SCOPES", "CREATED", "EXPIRES", "REVOKED"
            )
            .map_err(write)?;
            for key in &keys {
                writeln!(
                    out,
                    "{:<16}  {:<16}  {:<28}  {:<24}  {:<24}  {:<24}  {}",
                    key.id,
                    key.tenant,
                    key.scopes.join(","),
                    rfc3339(key.created_at),
                    key.expires_at.map_or("never".into(), rfc3339),
                    key.revoked_at.map_or("-".into(), rfc3339),
                    key.label.as_deref().unwrap_or("")
                )
                .map_err(write)?;
            }
        }
        KeysAction::Revoke { id } => {
            let id = id.trim().trim_start_matches("pmk_").to_string();
            let id = id.split('_').next().unwrap_or_default().to_string();
            let key = if auth::key::is_id(&id) {
                store
                    .revoke_api_key(&id, pixmill_shared::now_ms())
                    .await
                    .map_err(failed)?
            } else {
                None
            };
            let key =
                key.ok_or_else(|| ManageError::Failed(format!("no API key with id {id:?}")))?;
            describe(&key, out).map_err(write)?;
            writeln!(out, "revoked: every gateway refuses it within 2 seconds").map_err(write)?;
        }
    }
    Ok(())
}

/// A limit as given on the command line: None keeps the current value, `default` (or
/// Some(None)) clears it.
fn limit<T: std::str::FromStr>(
    given: Option<&str>,
    name: &str,
    valid: impl Fn(&T) -> bool,
) -> Result<Option<Option<T>>, ManageError> {
    match given.map(str::trim) {
        None => Ok(None),
        Some("default") => Ok(Some(None)),
        Some(text) => text
            .parse::<T>()
            .ok()
            .filter(|v| valid(v))
            .map(|v| Some(Some(v)))
            .ok_or_else(|| ManageError::Usage(format!("--{name}: {text:?} is not a valid value"))),
    }
}

/// Runs `tenants <action>` against `url`, writing to `out`.
pub async fn tenants(
    url: &DatabaseUrl,
    action: TenantsAction,
    out: &mut impl Write,
) -> Result<(), ManageError> {
    let write = |e: std::io::Error| ManageError::Failed(format!("writing the output: {e}"));
    let store = store::open_for_keys(url)
        .await
        .map_err(|e| ManageError::Failed(format!("task store {url}: {e}")))?;
    let failed = |e: store::StoreError| ManageError::Failed(e.to_string());
    match action {
        TenantsAction::Set {
            name,
            max_inflight,
            rate,
            burst,
        } => {
            auth::check_tenant(&name).map_err(ManageError::Usage)?;
            let max = limit::<u32>(max_inflight.as_deref(), "max-inflight", |v| {
                (1..=10_000_000).contains(v)
            })?;
            let rate = limit::<f64>(rate.as_deref(), "rate", |v| {
                v.is_finite() && (0.0..=1_000_000.0).contains(v)
            })?;
            let burst = limit::<u32>(burst.as_deref(), "burst", |v| *v >= 1)?;
            let current = store.get_tenant(&name).await.map_err(failed)?;
            let limits = TenantLimits::updated(&name, current, max, rate, burst);
            store.put_tenant(&limits).await.map_err(failed)?;
            describe_tenant(&limits, out).map_err(write)?;
            writeln!(
                out,
                "set: every gateway applies it within {} seconds",
                LIMITS_CACHE.as_secs()
            )
            .map_err(write)?;
        }
        TenantsAction::List => {
            writeln!(
                out,
                "{:<24}  {:<12}  {:<10}  {:<8}  UPDATED",
                "TENANT", "MAX_INFLIGHT", "RATE", "BURST"
            )
            .map_err(write)?;
            let or_default = |v: Option<String>| v.unwrap_or_else(|| "default".into());
            for t in store.list_tenants().await.map_err(failed)? {
                writeln!(
                    out,
                    "{:<24}  {:<12}  {:<10}  {:<8}  {}",
                    t.name,
                    or_default(t.max_inflight.map(|v| v.to_string())),
                    or_default(t.rate.map(|v| v.to_string())),
                    or_default(t.burst.map(|v| v.to_string())),
                    rfc3339(t.updated_at)
                )
                .map_err(write)?;
            }
        }
    }
    Ok(())
}

/// A tenant's own limits, one a line.
fn describe_tenant(t: &TenantLimits, out: &mut impl Write) -> std::io::Result<()> {
    let or_default = |v: Option<String>| v.unwrap_or_else(|| "default".into());
    writeln!(out, "tenant:        {}", t.name)?;
    writeln!(
        out,
        "max inflight:  {}",
        or_default(t.max_inflight.map(|v| v.to_string()))
    )?;
    writeln!(
        out,
        "rate:          {}",
        or_default(t.rate.map(|v| format!("{v}/s")))
    )?;
    writeln!(
        out,
        "burst:         {}",
        or_default(t.burst.map(|v| v.to_string()))
    )?;
    Ok(())
}

/// Runs `webhook-secret --tenant TENANT` with `master` (`PIXMILL_WEBHOOK_SECRET`, None when
/// unset), writing to `out`: the tenant and header, then the secret alone on the last line.
pub fn webhook_secret(
    master: Option<&str>,
    tenant: &str,
    out: &mut impl Write,
) -> Result<(), ManageError> {
    let master = master.filter(|m| !m.is_empty()).ok_or_else(|| {
        ManageError::Usage(
            "PIXMILL_WEBHOOK_SECRET is not set: webhooks are off, and there is no secret to \
             derive the tenant's from"
                .into(),
        )
    })?;
    if tenant.is_empty()
        || tenant.len() > crate::jwt::MAX_TENANT_BYTES
        || tenant.chars().any(char::is_control)
    {
        return Err(ManageError::Usage(format!(
            "--tenant must be a tenant's name: 1 to {} bytes, no control characters",
            crate::jwt::MAX_TENANT_BYTES
        )));
    }
    let write = |e: std::io::Error| ManageError::Failed(format!("writing the output: {e}"));
    writeln!(out, "tenant:   {tenant}").map_err(write)?;
    writeln!(out, "header:   {}", sign::SIGNATURE_HEADER).map_err(write)?;
    writeln!(
        out,
        "the tenant's webhook secret (HMAC-SHA256 key of its deliveries, also at GET /v1/webhooks/secret):"
    )
    .map_err(write)?;
    writeln!(out, "{}", sign::tenant_secret(master, tenant)).map_err(write)?;
    Ok(())
}

/// A key's record, one field a line, never its secret.
fn describe(key: &ApiKey, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "id:       {}", key.id)?;
    writeln!(out, "tenant:   {}", key.tenant)?;
    writeln!(out, "scopes:   {}", key.scopes.join(","))?;
    writeln!(out, "created:  {}", rfc3339(key.created_at))?;
    writeln!(
        out,
        "expires:  {}",
        key.expires_at.map_or("never".into(), rfc3339)
    )?;
    if let Some(at) = key.revoked_at {
        writeln!(out, "revoked:  {}", rfc3339(at))?;
    }
    if let Some(label) = &key.label {
        writeln!(out, "label:    {label}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_created_listed_and_revoked_from_the_command_line() {
        let dir = std::env::temp_dir().join(format!("pixmill-keys-{}", uuid::Uuid::new_v4()));
        let url = DatabaseUrl::Sqlite(dir.join("pixmill.db"));
        // A gateway holds the file: the command works beside it.
        let gateway = store::open(&url).await.expect("gateway's store");
        let mut out = Vec::new();
        let create = KeysAction::Create {
            tenant: "acme".into(),
            scopes: "jobs:read".into(),
            ttl: Some(60),
            label: Some("ci".into()),
        };
        keys(&url, create, &mut out).await.expect("create");
        let text = String::from_utf8(out).expect("utf-8");
        let token = text.lines().last().expect("a last line").to_string();
        let presented = auth::key::parse(&token).expect("the last line is the key");
        let stored = gateway
            .get_api_key(&presented.id)
            .await
            .expect("get")
            .expect("the gateway sees it");
        assert_eq!(stored.tenant, "acme");
        assert!(stored.expires_at.is_some());

        let mut out = Vec::new();
        keys(&url, KeysAction::List { tenant: None }, &mut out)
            .await
            .expect("list");
        let listing = String::from_utf8(out).expect("utf-8");
        assert!(listing.contains(&presented.id) && listing.contains("ci"));
        assert!(!listing.contains(&token[21..]), "no secret in the listing");

        let mut out = Vec::new();
        let revoke = KeysAction::Revoke {
            id: presented.id.clone(),
        };
        keys(&url, revoke, &mut out).await.expect("revoke");
        let stored = gateway.get_api_key(&presented.id).await.expect("get");
        assert!(stored.and_then(|k| k.revoked_at).is_some());

        let unknown = KeysAction::Revoke {
            id: "0123456789abcdef".into(),
        };
        let err = keys(&url, unknown, &mut Vec::new())
            .await
            .expect_err("unknown");
        assert_eq!(err.exit_code(), 1);
        let bad = KeysAction::Create {
            tenant: "acme".into(),
            scopes: "root".into(),
            ttl: None,
            label: None,
        };
        let err = keys(&url, bad, &mut Vec::new())
            .await
            .expect_err("bad scope");
        assert_eq!(err.exit_code(), 64);
        drop(gateway);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn tenants_limits_are_set_changed_and_cleared_from_the_command_line() {
        let dir = std::env::temp_dir().join(format!("pixmill-tenants-{}", uuid::Uuid::new_v4()));
        let url = DatabaseUrl::Sqlite(dir.join("pixmill.db"));
        let gateway = store::open(&url).await.expect("gateway's store");
        let set = |max: Option<&str>, rate: Option<&str>| TenantsAction::Set {
            name: "acme".into(),
            max_inflight: max.map(str::to_string),
            rate: rate.map(str::to_string),
            burst: None,
        };
        tenants(&url, set(Some("50"), Some("2.5")), &mut Vec::new())
            .await
            .expect("set");
        let own = gateway.get_tenant("acme").await.expect("get").expect("set");
        assert_eq!(
            (own.max_inflight, own.rate, own.burst),
            (Some(50), Some(2.5), None)
        );
        // A limit not given stays; `default` clears one.
        tenants(&url, set(None, Some("default")), &mut Vec::new())
            .await
            .expect("clear");
        let own = gateway.get_tenant("acme").await.expect("get").expect("set");
        assert_eq!((own.max_inflight, own.rate), (Some(50), None));
        let mut out = Vec::new();
        tenants(&url, TenantsAction::List, &mut out)
            .await
            .expect("list");
        let listing = String::from_utf8(out).expect("utf-8");
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with("acme") && l.contains("50")),
            "{listing}"
        );
        let err = tenants(&url, set(Some("0"), None), &mut Vec::new())
            .await
            .expect_err("0 in flight is no quota");
        assert_eq!(err.exit_code(), 64);
        assert!(err.to_string().contains("--max-inflight"), "{err}");
        drop(gateway);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_webhook_secret_command_prints_the_tenants_secret_last() {
        let mut out = Vec::new();
        webhook_secret(Some("test-webhook-secret"), "alpha", &mut out).expect("secret");
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            text.lines().last(),
            Some("657570e2705032d94701c4dafa3351e2d790e3b39daee305013391b3e57c88c9"),
            "{text}"
        );
        assert!(!text.contains("test-webhook-secret"), "never the master");
        for (master, tenant) in [
            (None, "alpha"),
            (Some(""), "alpha"),
            (Some("m"), ""),
            (Some("m"), "a\nb"),
        ] {
            let err = webhook_secret(master, tenant, &mut Vec::new()).expect_err("refused");
            assert_eq!(err.exit_code(), 64, "{master:?} {tenant:?}");
        }
    }
}
