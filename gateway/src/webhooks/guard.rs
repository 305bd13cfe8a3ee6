//! The guard on callback URLs: http(s) only, no credentials, and no loopback, private,
//! link-local or otherwise non-public address unless the host is on
//! `PIXMILL_WEBHOOK_ALLOW` (when that list is set, only its hosts are allowed).
//!
//! An allow-list entry is `host` (that host on its scheme's default port: 80 for http,
//! 443 for https) or `host:port` (that port only); IPv6 hosts are written in brackets,
//! `[::1]` or `[::1]:8080`. A refusal names the URL's host, never the address a name
//! resolved to: that would map the internal network for whoever submits the URL.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use super::WebhookSettings;
use crate::error::{ApiCode, ApiError};

/// Checks a `callback_url` at submit time: the answer is a 422 naming the rule broken.
pub async fn check_url(settings: &WebhookSettings, raw: &str) -> Result<String, ApiError> {
    let refused = |why: String| {
        ApiError::new(
            ApiCode::CallbackNotAllowed,
            format!("callback_url {raw:?} is refused: {why}"),
        )
    };
    if settings.secret.is_none() {
        return Err(refused(
            "webhooks are off on this gateway (set PIXMILL_WEBHOOK_SECRET to sign them)".into(),
        ));
    }
    if raw.len() > 2048 {
        return Err(refused("it is longer than 2048 characters".into()));
    }
    resolve(settings, raw).await.map_err(refused)?;
    Ok(raw.to_string())
}

/// Parses and resolves a callback URL under the rules above; returns the URL, its host
/// and the one address to connect to.
pub(super) async fn resolve(
    settings: &WebhookSettings,
    raw: &str,
) -> Result<(reqwest::Url, String, SocketAddr), String> {
    let url = reqwest::Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("only http and https are allowed".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL are not allowed".into());
    }
    let host = url.host_str().ok_or("it has no host")?.to_string();
    let port = url.port_or_known_default().ok_or("it has no port")?;
    let listed = settings
        .allow
        .iter()
        .any(|entry| allows(entry, &host, url.scheme(), port));
    if !settings.allow.is_empty() && !listed {
        return Err(format!("{host}:{port} is not on PIXMILL_WEBHOOK_ALLOW"));
    }
    let lookup = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::lookup_host((host.trim_matches(['[', ']']), port)),
    )
    .await
    .map_err(|_| format!("{host} did not resolve within 3 s"))?
    .map_err(|e| format!("{host} does not resolve ({e})"))?;
    let addrs: Vec<SocketAddr> = lookup.collect();
    let first = *addrs
        .first()
        .ok_or_else(|| format!("{host} has no address"))?;
    if !listed && addrs.iter().any(|a| !is_public(a.ip())) {
        // Only an IP literal is named: what a name resolves to stays unsaid.
        let literal = host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok();
        let what = if literal { "is" } else { "resolves to" };
        return Err(format!(
            "{host} {what} a loopback, private or otherwise non-public address \
             (name the host in PIXMILL_WEBHOOK_ALLOW to allow it)"
        ));
    }
    Ok((url, host, first))
}

/// An allow-list entry, `host` or `host:port` (IPv6 in brackets), as the host (as a
/// URL writes it, lowercased) and the port if one is given.
pub fn allow_entry(entry: &str) -> Result<(String, Option<u16>), String> {
    let entry = entry.trim().to_ascii_lowercase();
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{entry:?} opens a bracket it does not close"))?;
        let port =
            match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(|| {
                    format!("{entry:?}: expected :port after the bracketed address")
                })?),
            };
        (format!("[{inside}]"), port)
    } else if entry.matches(':').count() > 1 {
        return Err(format!(
            "{entry:?}: write IPv6 addresses in brackets, e.g. [{entry}] or [{entry}]:8080"
        ));
    } else {
        match entry.split_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (entry.clone(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("{entry:?} names no host"));
    }
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{entry:?}: {p:?} is not a port (1-65535)"))
        })
        .transpose()?;
    Ok((host, port))
}

/// True when allow-list `entry` lets callbacks go to `host` on `port`: a bare host allows
/// only the scheme's default port.
fn allows(entry: &str, host: &str, scheme: &str, port: u16) -> bool {
    let Ok((listed, listed_port)) = allow_entry(entry) else {
        return false;
    };
    let default = match scheme {
        "https" => 443,
        _ => 80,
    };
    listed.eq_ignore_ascii_case(host) && listed_port.unwrap_or(default) == port
}

/// True for an address on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            let first = seg[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || seg[..6] == [0; 6] // IPv4-compatible ::a.b.c.d (::/96)
                || seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] // NAT64 64:ff9b::/96
                || seg[..3] == [0x64, 0xff9b, 1] // local-use NAT64 64:ff9b:1::/48
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || (first & 0xffc0) == 0xfec0) // site local (deprecated) fec0::/10
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(private.parse().expect("ip")), "{private}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().expect("ip")), "{public}");
        }
    }

    fn refused(ip: &str) {
        assert!(
            !is_public(ip.parse().expect("ip")),
            "{ip} should be refused"
        );
    }

    fn allowed(ip: &str) {
        assert!(is_public(ip.parse().expect("ip")), "{ip} should be allowed");
    }

    #[test]
    fn nat64_prefixes_are_refused() {
        // 64:ff9b::/96, the well-known prefix: it reaches any IPv4 address, 10.0.0.1 too.
        refused("64:ff9b::");
        refused("64:ff9b::10.0.0.1");
        refused("64:ff9b::255.255.255.255");
        allowed("64:ff9b::1:0:0"); // just past the /96
        // 64:ff9b:1::/48, the local-use prefix.
        refused("64:ff9b:1::");
        refused("64:ff9b:1:ffff:ffff:ffff:ffff:ffff");
        allowed("64:ff9b:2::");
        allowed("64:ff9a:ffff:ffff:ffff:ffff:ffff:ffff");
    }

    #[test]
    fn ipv4_compatible_addresses_are_refused() {
        refused("::"); // unspecified
        refused("::1"); // loopback
        refused("::2");
        refused("::127.0.0.1");
        refused("::8.8.8.8");
        refused("::255.255.255.255");
        allowed("0:0:0:0:1::"); // outside ::/96
        allowed("::1:0:0:1");
    }

    #[test]
    fn site_local_addresses_are_refused() {
        refused("fec0::");
        refused("fec0::1");
        refused("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
        refused("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff"); // last link-local
        allowed("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"); // just below unique local
    }

    #[test]
    fn allow_entries_parse_with_and_without_a_port() {
        assert_eq!(
            allow_entry("Hooks.Example").unwrap(),
            ("hooks.example".into(), None)
        );
        assert_eq!(
            allow_entry("hooks.example:8443").unwrap(),
            ("hooks.example".into(), Some(8443))
        );
        assert_eq!(allow_entry("[::1]").unwrap(), ("[::1]".into(), None));
        assert_eq!(
            allow_entry("[::1]:9000").unwrap(),
            ("[::1]".into(), Some(9000))
        );
        for bad in [
            "::1",
            "host:0",
            "host:99999",
            "host:x",
            "[::1",
            "[::1]9",
            ":80",
            "",
        ] {
            assert!(allow_entry(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_bare_host_allows_only_the_default_port() {
        assert!(allows("hooks.example", "hooks.example", "http", 80));
        assert!(allows("hooks.example", "hooks.example", "https", 443));
        assert!(!allows("hooks.example", "hooks.example", "http", 443));
        assert!(!allows("hooks.example", "hooks.example", "https", 80));
        assert!(!allows("hooks.example", "hooks.example", "http", 8080));
        assert!(allows("hooks.example:8080", "hooks.example", "http", 8080));
        assert!(allows("hooks.example:8080", "hooks.example", "https", 8080));
        assert!(!allows("hooks.example:8080", "hooks.example", "http", 80));
        assert!(!allows("hooks.example:8080", "other.example", "http", 8080));
        assert!(allows("[::1]:9", "[::1]", "http", 9));
    }

    #[tokio::test]
    async fn listed_ports_are_the_only_ones_allowed() {
        let settings = WebhookSettings {
            secret: Some("s".into()),
            allow: vec!["127.0.0.1".into(), "localhost:9".into()],
            ..WebhookSettings::default()
        };
        for ok in [
            "http://127.0.0.1/hook",
            "http://127.0.0.1:80/hook",
            "https://127.0.0.1/hook",
            "http://localhost:9/hook",
        ] {
            check_url(&settings, ok).await.expect(ok);
        }
        for no in [
            "http://127.0.0.1:9/hook",
            "https://127.0.0.1:80/hook",
            "http://localhost/hook",
            "http://localhost:10/hook",
        ] {
            let err = check_url(&settings, no).await.expect_err(no).to_string();
            assert!(err.contains("not on PIXMILL_WEBHOOK_ALLOW"), "{no}: {err}");
        }
    }

    #[tokio::test]
    async fn refusals_never_name_what_a_name_resolved_to() {
        let open = WebhookSettings {
            secret: Some("s".into()),
            ..WebhookSettings::default()
        };
        let err = check_url(&open, "http://localhost:9/hook")
            .await
            .expect_err("loopback")
            .to_string();
        assert!(err.contains("localhost resolves to a loopback"), "{err}");
        for address in ["127.0.0.1", "::1", "[::1]"] {
            let message = err.replacen("\"http://localhost:9/hook\"", "", 1);
            assert!(!message.contains(address), "{err} reveals {address}");
        }
        // An address written in the URL is the client's own; naming it reveals nothing.
        let err = check_url(&open, "http://10.1.2.3/hook")
            .await
            .expect_err("private")
            .to_string();
        assert!(err.contains("10.1.2.3 is a loopback, private"), "{err}");
    }

    #[tokio::test]
    async fn callbacks_to_private_or_unlisted_hosts_are_refused() {
        let open = WebhookSettings {
            secret: Some("s".into()),
            ..WebhookSettings::default()
        };
        for url in [
            "http://127.0.0.1:9/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/x",
            "ftp://example.com/x",
            "http://user:pw@example.com/",
            "not a url",
        ] {
            let err = check_url(&open, url).await.expect_err(url);
            assert!(err.to_string().contains("is refused"), "{url}: {err}");
        }
        let listed = WebhookSettings {
            allow: vec!["127.0.0.1:9".into()],
            ..open.clone()
        };
        check_url(&listed, "http://127.0.0.1:9/hook")
            .await
            .expect("listed");
        let err = check_url(&listed, "http://localhost:9/hook")
            .await
            .expect_err("unlisted");
        assert!(err.to_string().contains("PIXMILL_WEBHOOK_ALLOW"), "{err}");
        let off = WebhookSettings::default();
        let err = check_url(&off, "http://127.0.0.1:9/")
            .await
            .expect_err("off");
        assert!(err.to_string().contains("PIXMILL_WEBHOOK_SECRET"), "{err}");
    }
}
