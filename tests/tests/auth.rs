//! Authentication end to end, with `PIXMILL_AUTH=required`: every API route against
//! every kind of bad credential (API keys and bearer JWTs), scopes, tenant isolation
//! (ids, results, events, listings, idempotency keys, callback URLs, webhook secrets),
//! the operators' routes, on SQLite and on PostgreSQL; the `keys` command beside a
//! running gateway, and the refusal to start on a public address without a decision.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use pixmill_gateway::{
    auth::{self, ApiScope, AuthMode, KeyRequest},
    jwt::{JwtKeys, JwtSecret, JwtSettings},
    store::{DatabaseUrl, Store},
    view::WITHHELD_ERROR,
    webhooks::sign::tenant_secret,
};
use pixmill_tests::{Client, Reply, Stack, TIMEOUT, binary, common, photos::photo, temp_dir};
use serde_json::{Value, json};
use sha2::Sha256;
use uuid::Uuid;

/// Makes a key of `tenant` with `scopes` straight in the store; `ttl` and `age` (how
/// long ago it was made) let a test make an expired one.
async fn key(store: &Store, tenant: &str, scopes: &str, ttl: Option<u64>, age_ms: i64) -> String {
    let request = KeyRequest {
        tenant: tenant.into(),
        scopes: ApiScope::parse_list(scopes).expect("scopes"),
        ttl: ttl.map(Duration::from_secs),
        label: Some("auth test".into()),
    };
    auth::issue(store, request, pixmill_shared::now_ms() - age_ms)
        .await
        .expect("issue")
        .0
}

/// The public id of a key.
fn id_of(key: &str) -> String {
    auth::key::parse(key).expect("a key").id
}

/// The identity provider the matrix's gateways trust: an HS256 secret, an issuer and an
/// audience.
const JWT_SECRET: &[u8] = b"the-auth-tests-hs256-secret-0123456789";
const JWT_ISSUER: &str = "https://idp.pixmill.test";
const JWT_AUDIENCE: &str = "pixmill";

/// The webhook master secret of every test stack (see `Stack::start_configured`).
const WEBHOOK_MASTER: &str = "test-webhook-secret";

fn jwt_settings() -> JwtSettings {
    let secret = JwtSecret::new(JWT_SECRET).expect("a long enough secret");
    let mut settings = JwtSettings::new(JwtKeys::Hs256(secret));
    settings.issuer = Some(JWT_ISSUER.into());
    settings.audience = Some(JWT_AUDIENCE.into());
    settings
}

fn base64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWT of `header` and `claims`, signed with HMAC-SHA256 under [`JWT_SECRET`]
/// whatever the header says, made by hand as an identity provider would.
fn jwt(header: &Value, claims: &Value) -> String {
    let signed = format!(
        "{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(JWT_SECRET).expect("HMAC takes any key");
    mac.update(signed.as_bytes());
    format!("{signed}.{}", base64url(&mac.finalize().into_bytes()))
}

/// The header of an HS256 token.
fn hs256() -> Value {
    json!({"alg": "HS256", "typ": "JWT"})
}

/// Claims the matrix's gateways accept: `tenant` in `sub`, `scope`, the issuer and
/// audience, valid `ttl` more seconds (negative: expired that long ago).
fn claims(tenant: &str, scope: Value, ttl: i64) -> Value {
    let now = pixmill_shared::now_ms() / 1000;
    json!({
        "iss": JWT_ISSUER,
        "aud": JWT_AUDIENCE,
        "sub": tenant,
        "scope": scope,
        "iat": now,
        "exp": now + ttl,
    })
}

/// `token` with the first character of its signature changed: a change of the
/// signature's first byte, not of base64's unused bits.
fn tampered(token: &str) -> String {
    let (signed, signature) = token.rsplit_once('.').expect("three segments");
    let mut chars: Vec<char> = signature.chars().collect();
    chars[0] = if chars[0] == 'A' { 'B' } else { 'A' };
    format!("{signed}.{}", chars.into_iter().collect::<String>())
}

/// One request of the matrix.
#[derive(Debug, Clone, Copy)]
enum Call {
    Submit,
    List,
    Status,
    Events,
    Result,
    Delete,
    WebhookSecret,
    Stats,
    Metrics,
    ListKeys,
    CreateKey,
    RevokeKey,
    ListTenants,
    ShowTenant,
    SetTenant,
}

impl Call {
    const ALL: [Call; 15] = [
        Call::Submit,
        Call::List,
        Call::Status,
        Call::Events,
        Call::Result,
        Call::Delete,
        Call::WebhookSecret,
        Call::Stats,
        Call::Metrics,
        Call::ListKeys,
        Call::CreateKey,
        Call::RevokeKey,
        Call::ListTenants,
        Call::ShowTenant,
        Call::SetTenant,
    ];

    /// The scope the route needs.
    fn scope(self) -> &'static str {
        match self {
            Call::Submit | Call::Delete | Call::WebhookSecret => "jobs:write",
            Call::List | Call::Status | Call::Events | Call::Result => "jobs:read",
            _ => "admin",
        }
    }

    /// Sends it as `client`; `job` is the job the per-job routes name, `victim` the key
    /// id the revocation names.
    async fn send(self, client: &Client, job: &str, victim: &str) -> Reply {
        let image = photo("china.jpg");
        let reply = match self {
            Call::Submit => client.submit(&image, &[("op", "grayscale")]).await,
            Call::List => client.get("/v1/jobs").await,
            Call::Status => client.get(&format!("/v1/jobs/{job}")).await,
            Call::Events => client.get(&format!("/v1/jobs/{job}/events")).await,
            Call::Result => client.get(&format!("/v1/jobs/{job}/result")).await,
            Call::Delete => client.delete(&format!("/v1/jobs/{job}")).await,
            Call::WebhookSecret => client.get("/v1/webhooks/secret").await,
            Call::Stats => client.get("/v1/stats").await,
            Call::Metrics => client.get("/metrics").await,
            Call::ListKeys => client.get("/v1/keys").await,
            Call::CreateKey => {
                client
                    .post_json("/v1/keys", &serde_json::json!({"tenant": "made"}))
                    .await
            }
            Call::RevokeKey => client.delete(&format!("/v1/keys/{victim}")).await,
            Call::ListTenants => client.get("/v1/tenants").await,
            Call::ShowTenant => client.get("/v1/tenants/alpha").await,
            Call::SetTenant => {
                client
                    .put_json("/v1/tenants/made", &serde_json::json!({"rate": 0}))
                    .await
            }
        };
        reply.expect("an answer")
    }
}

/// Asserts status and code, and for 401/403 the bearer challenge without the secret.
fn expect(reply: &Reply, status: u16, code: &str, what: &str, secret: Option<&str>) {
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (status, code),
        "{what}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    let challenge = reply
        .headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if matches!(status, 401 | 403) {
        assert!(
            challenge.starts_with("Bearer realm=\"pixmill\""),
            "{what}: {challenge:?}"
        );
    }
    if let Some(secret) = secret {
        let body = String::from_utf8_lossy(&reply.body);
        assert!(
            !body.contains(secret) && !challenge.contains(secret),
            "{what} echoes the secret"
        );
    }
}

/// The body of a 200, as text.
fn ok_text(reply: &Reply, what: &str) -> String {
    let text = String::from_utf8_lossy(&reply.body).to_string();
    assert_eq!(reply.status, 200, "{what}: {text}");
    text
}

#[tokio::test]
async fn every_route_refuses_bad_credentials_and_confines_tenants() {
    let dir = temp_dir();
    let database = DatabaseUrl::Sqlite(dir.join("pixmill.db"));
    auth_matrix(dir, database).await;
}

/// The same matrix on a PostgreSQL task store (keys, jobs and idempotency keys there).
#[tokio::test]
async fn every_route_refuses_bad_credentials_and_confines_tenants_on_postgres() {
    let Some(database) = pixmill_tests::backends::fresh_postgres().await else {
        return;
    };
    auth_matrix(temp_dir(), database).await;
}

/// Every route against every credential, scopes, tenant isolation and the operators'
/// routes, on one stack whose task store is `database`, with API keys and JWTs.
async fn auth_matrix(dir: std::path::PathBuf, database: DatabaseUrl) {
    let common = common(&format!("test-{}", Uuid::new_v4().simple()), &dir);
    let stack_database = database.clone();
    let mut stack = Stack::start_configured(common, |s| {
        s.auth = AuthMode::Required;
        s.database_url = stack_database;
        s.jwt = Some(jwt_settings());
        // The callback below goes to 127.0.0.1:9, where nothing listens.
        s.webhooks.allow = vec!["127.0.0.1:9".into()];
    })
    .await
    .expect("start");
    stack.add_worker("auth", 2);
    let store = stack.jobs().store.clone();
    let gateway = stack.client.clone();

    let a_writer = key(&store, "alpha", "jobs:write,jobs:read", None, 0).await;
    let a_reader = key(&store, "alpha", "jobs:read", None, 0).await;
    let b_writer = key(&store, "beta", "jobs:write,jobs:read", None, 0).await;
    let admin = key(&store, "ops", "admin", None, 0).await;
    let expired = key(&store, "alpha", "admin", Some(1), 10_000).await;
    let revoked = key(&store, "alpha", "admin", None, 0).await;
    store
        .revoke_api_key(&id_of(&revoked), pixmill_shared::now_ms())
        .await
        .expect("revoke")
        .expect("exists");
    let unknown = auth::key::generate().expect("key").token;
    let victim = id_of(&key(&store, "gamma", "jobs:read", None, 0).await);

    // JWTs of the identity provider: good ones, each acting as its tenant with its
    // scopes (an array with a scope pixmill does not know, for the admin), and bad ones.
    let jwt_reader = jwt(&hs256(), &claims("alpha", json!("jobs:read"), 600));
    let jwt_beta = jwt(
        &hs256(),
        &claims("beta", json!("jobs:write jobs:read"), 600),
    );
    let jwt_admin = jwt(&hs256(), &claims("ops", json!(["profile", "admin"]), 600));
    let jwt_expired = jwt(&hs256(), &claims("alpha", json!("admin"), -600));
    let mut elsewhere = claims("alpha", json!("admin"), 600);
    elsewhere["aud"] = json!("another-service");
    let jwt_wrong_audience = jwt(&hs256(), &elsewhere);
    let would_be_admin = jwt(&hs256(), &claims("alpha", json!("admin"), 600));
    let payload = would_be_admin.split('.').nth(1).expect("a payload");
    let jwt_alg_none = format!("{}.{payload}.", base64url(br#"{"alg":"none","typ":"JWT"}"#));
    let jwt_tampered = tampered(&would_be_admin);

    // Alpha's job, with an idempotency key, run to the end.
    let (alpha, beta, root) = (
        gateway.with_key(&a_writer),
        gateway.with_key(&b_writer),
        gateway.with_key(&admin),
    );
    let (reader, token_reader, token_beta, token_root) = (
        gateway.with_key(&a_reader),
        gateway.with_key(&jwt_reader),
        gateway.with_key(&jwt_beta),
        gateway.with_key(&jwt_admin),
    );
    let image = photo("china.jpg");
    let idem = [("Idempotency-Key", "order-1")];
    let first = alpha
        .submit_with_headers(&image, &[("op", "grayscale")], &idem)
        .await
        .expect("submit");
    assert_eq!(
        first.status,
        202,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    let job = first.json()["id"].as_str().expect("id").to_string();
    let done = alpha.wait_terminal(&job).await.expect("wait");
    assert_eq!(done["state"], "succeeded", "{done}");

    // Bad credentials, on every route: the same refusal everywhere, as docs/api.md
    // documents it for keys and for JWTs.
    let bad: Vec<(&str, String, &str, Option<String>)> = vec![
        ("no key", String::new(), "credential_missing", None),
        (
            "a malformed key",
            "Bearer pmk_nonsense".into(),
            "credential_malformed",
            None,
        ),
        (
            "an unknown key",
            format!("Bearer {unknown}"),
            "credential_invalid",
            Some(unknown[21..].to_string()),
        ),
        (
            "an expired key",
            format!("Bearer {expired}"),
            "credential_expired",
            Some(expired[21..].to_string()),
        ),
        (
            "a revoked key",
            format!("Bearer {revoked}"),
            "credential_revoked",
            Some(revoked[21..].to_string()),
        ),
        (
            "an expired JWT",
            format!("Bearer {jwt_expired}"),
            "credential_expired",
            Some(jwt_expired.clone()),
        ),
        (
            "a JWT for another audience",
            format!("Bearer {jwt_wrong_audience}"),
            "credential_invalid",
            Some(jwt_wrong_audience.clone()),
        ),
        (
            "an unsigned JWT (alg none)",
            format!("Bearer {jwt_alg_none}"),
            "credential_invalid",
            Some(jwt_alg_none.clone()),
        ),
        (
            "a JWT with a tampered signature",
            format!("Bearer {jwt_tampered}"),
            "credential_invalid",
            Some(jwt_tampered.clone()),
        ),
    ];
    for call in Call::ALL {
        for (what, header, code, secret) in &bad {
            let client = if header.is_empty() {
                gateway.clone()
            } else {
                gateway.with_authorization(header)
            };
            let reply = call.send(&client, &job, &victim).await;
            expect(
                &reply,
                401,
                code,
                &format!("{call:?} with {what}"),
                secret.as_deref(),
            );
        }
    }

    // Valid keys and tokens without the route's scope: 403, naming the scope.
    for call in Call::ALL {
        let needs = call.scope();
        let clients: Vec<(&str, &Client)> = match needs {
            "jobs:write" => vec![("read-only key", &reader), ("read-only JWT", &token_reader)],
            "admin" => vec![
                ("read-only key", &reader),
                ("read-only JWT", &token_reader),
                ("tenant writer key", &alpha),
                ("tenant writer JWT", &token_beta),
            ],
            _ => vec![],
        };
        for (what, client) in clients {
            let reply = call.send(client, &job, &victim).await;
            expect(
                &reply,
                403,
                "insufficient_scope",
                &format!("{call:?} with a {what}"),
                None,
            );
            assert!(
                reply.error_message().contains(needs),
                "{call:?}: {}",
                reply.error_message()
            );
        }
    }

    // Another tenant's job is not found, exactly like an unknown id, by key or JWT.
    for (what, other) in [("key", &beta), ("JWT", &token_beta)] {
        for call in [Call::Status, Call::Events, Call::Result, Call::Delete] {
            let reply = call.send(other, &job, &victim).await;
            expect(
                &reply,
                404,
                "not_found",
                &format!("{call:?} by another tenant's {what}"),
                None,
            );
            let unknown_id = Uuid::new_v4().to_string();
            let reply = call.send(other, &unknown_id, &victim).await;
            expect(
                &reply,
                404,
                "not_found",
                &format!("{call:?} of an unknown id with a {what}"),
                None,
            );
        }
    }
    // Alpha's readers, key and JWT, see its tenant's job, result and events.
    for client in [&reader, &token_reader] {
        for call in [Call::Status, Call::Result, Call::Events] {
            assert_eq!(
                call.send(client, &job, &victim).await.status,
                200,
                "{call:?}"
            );
        }
    }

    // Listings: each tenant its own; admin everyone's, and by tenant on request.
    let ids = |reply: Reply| -> Vec<String> {
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        reply.json()["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .map(|j| j["id"].as_str().expect("id").to_string())
            .collect()
    };
    assert!(ids(beta.get("/v1/jobs").await.expect("list")).is_empty());
    assert!(ids(token_beta.get("/v1/jobs").await.expect("list")).is_empty());
    assert_eq!(
        ids(alpha.get("/v1/jobs").await.expect("list")),
        vec![job.clone()]
    );
    assert_eq!(
        ids(token_reader.get("/v1/jobs").await.expect("list")),
        vec![job.clone()]
    );
    for (what, other) in [("key", &beta), ("JWT", &token_beta)] {
        let refused = other.get("/v1/jobs?tenant=alpha").await.expect("list");
        expect(
            &refused,
            403,
            "insufficient_scope",
            &format!("beta listing alpha with a {what}"),
            None,
        );
    }

    // Idempotency keys are per tenant: beta's "order-1" is a new job of its own, and
    // beta's JWT, acting as beta, gets that one back.
    let again = alpha
        .submit_with_headers(&image, &[("op", "grayscale")], &idem)
        .await
        .expect("replay");
    assert_eq!(
        (again.status, again.json()["id"].as_str()),
        (202, Some(job.as_str()))
    );
    let theirs = beta
        .submit_with_headers(&image, &[("op", "grayscale")], &idem)
        .await
        .expect("beta submit");
    assert_eq!(theirs.status, 202);
    let beta_job = theirs.json()["id"].as_str().expect("id").to_string();
    assert_ne!(beta_job, job);
    assert!(theirs.headers.get("idempotent-replayed").is_none());
    let by_token = token_beta
        .submit_with_headers(&image, &[("op", "grayscale")], &idem)
        .await
        .expect("beta's JWT submit");
    assert_eq!(
        (by_token.status, by_token.json()["id"].as_str()),
        (202, Some(beta_job.as_str())),
        "{}",
        String::from_utf8_lossy(&by_token.body)
    );
    assert_eq!(by_token.headers["idempotent-replayed"], "true");
    assert_eq!(
        ids(beta.get("/v1/jobs").await.expect("list")),
        vec![beta_job.clone()]
    );

    let mut both = vec![job.clone(), beta_job.clone()];
    both.sort();
    for (what, administrator) in [("key", &root), ("JWT", &token_root)] {
        let mut everyone = ids(administrator.get("/v1/jobs").await.expect("list"));
        everyone.sort();
        assert_eq!(everyone, both, "an admin {what} sees every tenant's jobs");
        assert_eq!(
            ids(administrator
                .get("/v1/jobs?tenant=alpha")
                .await
                .expect("list")),
            vec![job.clone()]
        );
        let reply = administrator
            .get(&format!("/v1/jobs/{beta_job}"))
            .await
            .expect("get");
        assert_eq!(reply.status, 200, "an admin {what} reads beta's job");
        // The operators' routes, for admins only (refused to the others above).
        ok_text(
            &administrator.get("/v1/stats").await.expect("stats"),
            "stats",
        );
        let metrics = ok_text(
            &administrator.get("/metrics").await.expect("metrics"),
            "metrics",
        );
        assert!(metrics.contains("pixmill_"), "{metrics}");
    }

    // Probes: /healthz needs no key and reads none; /readyz names internal addresses
    // (broker node, task store, blob store) only to admins, never to anyone else.
    assert_eq!(gateway.get("/healthz").await.expect("healthz").status, 200);
    for junk in ["Bearer pmk_nonsense", &format!("Bearer {jwt_alg_none}")] {
        let reply = gateway
            .with_authorization(junk)
            .get("/healthz")
            .await
            .expect("healthz");
        assert_eq!(reply.status, 200, "/healthz reads no key");
    }
    let data_dir = dir.display().to_string();
    for (what, client) in [
        ("anonymous", &gateway),
        ("tenant key", &alpha),
        ("tenant JWT", &token_beta),
    ] {
        let reply = client.get("/readyz").await.expect("readyz");
        let text = ok_text(&reply, &format!("/readyz, {what}"));
        let body = reply.json();
        assert!(body["broker_node"].is_null(), "{what}: {body}");
        assert_eq!(body["blob_store"], "folder", "{what}: {body}");
        for internal in [
            "127.0.0.1",
            "localhost",
            "amqp",
            "postgres://",
            "sqlite:",
            data_dir.as_str(),
        ] {
            assert!(
                !text.contains(internal),
                "/readyz, {what}, names {internal}: {text}"
            );
        }
    }
    let full = root.get("/readyz").await.expect("readyz").json();
    assert!(full["broker_node"].is_string(), "{full}");
    assert!(
        full["blob_store"]
            .as_str()
            .unwrap_or_default()
            .starts_with("folder "),
        "{full}"
    );
    let backend = if matches!(database, DatabaseUrl::Postgres(_)) {
        "postgres"
    } else {
        "sqlite"
    };
    assert_eq!(full["store_backend"], backend, "{full}");

    // Webhook secrets: each tenant gets its own, by key or JWT, derived from the master.
    for (tenant, client) in [("alpha", &alpha), ("beta", &token_beta)] {
        let reply = client.get("/v1/webhooks/secret").await.expect("secret");
        ok_text(&reply, &format!("{tenant}'s webhook secret"));
        assert_eq!(
            reply.json(),
            json!({
                "tenant": tenant,
                "secret": tenant_secret(WEBHOOK_MASTER, tenant),
                "signature_header": "Pixmill-Signature",
            })
        );
        assert_eq!(reply.headers["cache-control"], "no-store");
    }
    assert_ne!(
        tenant_secret(WEBHOOK_MASTER, "alpha"),
        tenant_secret(WEBHOOK_MASTER, "beta")
    );

    // A callback URL is shown to its job's tenant only: an admin sees the job and its
    // webhook's progress, not where it goes, nor the delivery errors that name it.
    let hook = "http://127.0.0.1:9/pixmill-hook";
    let hooked = alpha
        .submit_ok(&image, &[("op", "grayscale"), ("callback_url", hook)])
        .await
        .expect("submit with a callback");
    alpha.wait_terminal(&hooked).await.expect("wait");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let owners = loop {
        let record = alpha
            .get(&format!("/v1/jobs/{hooked}"))
            .await
            .expect("get")
            .json();
        if record["callback"]["attempts"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            break record;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delivery attempt: {record}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(owners["callback"]["url"], hook, "{owners}");
    let listed = ok_text(&alpha.get("/v1/jobs").await.expect("list"), "alpha's list");
    assert!(
        listed.contains(hook),
        "the owner's listing shows it: {listed}"
    );
    for (what, administrator) in [("key", &root), ("JWT", &token_root)] {
        let reply = administrator
            .get(&format!("/v1/jobs/{hooked}"))
            .await
            .expect("get");
        let text = ok_text(&reply, &format!("an admin {what} reading alpha's job"));
        assert!(
            !text.contains("127.0.0.1:9"),
            "admin {what} sees the URL: {text}"
        );
        let record = reply.json();
        let callback = record["callback"]
            .as_object()
            .expect("the webhook's progress");
        assert!(!callback.contains_key("url"), "{record}");
        assert_eq!(callback["state"], owners["callback"]["state"]);
        for attempt in callback["attempts"].as_array().expect("attempts") {
            assert!(
                attempt["error"].is_null() || attempt["error"] == WITHHELD_ERROR,
                "{attempt}"
            );
        }
        for path in [
            "/v1/jobs".to_string(),
            "/v1/jobs?tenant=alpha".to_string(),
            format!("/v1/jobs/{hooked}/events"),
        ] {
            let text = ok_text(
                &administrator.get(&path).await.expect("get"),
                &format!("an admin {what}: {path}"),
            );
            assert!(
                text.contains(&hooked) && !text.contains("127.0.0.1:9"),
                "admin {what}, {path}: {text}"
            );
        }
    }

    // Keys over HTTP: made, listed without secrets, revoked, refused within 5 s.
    let made = root
        .post_json(
            "/v1/keys",
            &serde_json::json!({"tenant": "delta", "scopes": ["jobs:read"], "label": "http"}),
        )
        .await
        .expect("create");
    assert_eq!(made.status, 201, "{}", String::from_utf8_lossy(&made.body));
    let made_key = made.json()["key"].as_str().expect("key").to_string();
    let delta = gateway.with_key(&made_key);
    assert_eq!(delta.get("/v1/jobs").await.expect("list").status, 200);
    let listing = root.get("/v1/keys").await.expect("keys");
    let text = String::from_utf8_lossy(&listing.body).to_string();
    assert!(text.contains(&id_of(&made_key)) && !text.contains(&made_key[21..]));
    let revoked_now = root
        .delete(&format!("/v1/keys/{}", id_of(&made_key)))
        .await
        .expect("revoke");
    assert_eq!(revoked_now.status, 200);
    assert!(revoked_now.json()["revoked_at"].is_string());
    let refused = delta.get("/v1/jobs").await.expect("list");
    expect(
        &refused,
        401,
        "credential_revoked",
        "a key revoked over HTTP",
        None,
    );
    let missing = root
        .delete("/v1/keys/0123456789abcdef")
        .await
        .expect("revoke");
    expect(&missing, 404, "not_found", "revoking an unknown key", None);

    // The owner may delete its job; nobody else could.
    let deleted = alpha
        .delete(&format!("/v1/jobs/{job}"))
        .await
        .expect("delete");
    assert_eq!(deleted.status, 200);

    stack.stop().await.expect("stop");
}

/// Runs `pixmill-gateway keys …` on `db`; returns exit code and stdout.
async fn keys_command(db: &std::path::Path, args: &[&str]) -> (i32, String) {
    keys_command_on(&format!("sqlite://{}", db.display()), args).await
}

/// Runs `pixmill-gateway keys …` on the task store `url`; returns exit code and stdout.
async fn keys_command_on(url: &str, args: &[&str]) -> (i32, String) {
    let output = tokio::process::Command::new(binary("pixmill-gateway").expect("binary"))
        .arg("keys")
        .args(args)
        .env("PIXMILL_DATABASE_URL", url)
        .output()
        .await
        .expect("runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_string(),
    )
}

#[tokio::test]
async fn the_keys_command_works_beside_a_running_gateway() {
    let dir = temp_dir();
    let common = common(&format!("test-{}", Uuid::new_v4().simple()), &dir);
    let db = common.data_dir.join("pixmill.db");
    let stack = Stack::start_configured(common, |s| s.auth = AuthMode::Required)
        .await
        .expect("start");

    let (code, out) = keys_command(
        &db,
        &[
            "create",
            "--tenant",
            "cli",
            "--scopes",
            "jobs:read",
            "--label",
            "from the command",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let token = out.lines().last().expect("a last line").trim().to_string();
    assert!(token.starts_with("pmk_"), "{out}");
    let client = stack.client.with_key(&token);
    assert_eq!(client.get("/v1/jobs").await.expect("list").status, 200);

    let (code, listing) = keys_command(&db, &["list"]).await;
    assert_eq!(code, 0);
    assert!(
        listing.contains(&id_of(&token)) && !listing.contains(&token[21..]),
        "{listing}"
    );

    let (code, out) = keys_command(&db, &["revoke", &id_of(&token)]).await;
    assert_eq!(code, 0, "{out}");
    // Refused within 5 s (the cache holds a key for 2 s at most).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let reply = client.get("/v1/jobs").await.expect("list");
        if reply.status == 401 {
            assert_eq!(reply.error_code(), "credential_revoked");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepted after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (code, _) = keys_command(&db, &["revoke", "0123456789abcdef"]).await;
    assert_eq!(code, 1, "an unknown key");
    let (code, _) = keys_command(&db, &["create", "--tenant", "cli", "--scopes", "root"]).await;
    assert_eq!(code, 64, "a bad scope is a usage error");
    stack.stop().await.expect("stop");
    let _ = std::fs::remove_dir_all(dir);
}

/// Two gateways on one PostgreSQL store: keys made by the command work on both, and a
/// key revoked through one gateway is refused by the other within 5 s.
#[tokio::test]
async fn a_revocation_reaches_every_gateway() {
    let Some(database) = pixmill_tests::backends::fresh_postgres().await else {
        return;
    };
    let pixmill_gateway::store::DatabaseUrl::Postgres(url) = database.clone() else {
        unreachable!("fresh_postgres gives a PostgreSQL URL")
    };
    let common = common(&format!("test-{}", Uuid::new_v4().simple()), &temp_dir());
    let mut stack = Stack::start_configured(common, |s| {
        s.auth = AuthMode::Required;
        s.database_url = database;
    })
    .await
    .expect("gateway a");
    let other = stack.add_gateway().await.expect("gateway b");

    let (code, out) =
        keys_command_on(&url, &["create", "--tenant", "ops", "--scopes", "admin"]).await;
    assert_eq!(code, 0, "{out}");
    let admin = out.lines().last().expect("key").trim().to_string();
    let (code, out) = keys_command_on(&url, &["create", "--tenant", "alpha"]).await;
    assert_eq!(code, 0, "{out}");
    let tenant_key = out.lines().last().expect("key").trim().to_string();

    let (here, there) = (
        stack.client.with_key(&tenant_key),
        other.with_key(&tenant_key),
    );
    assert_eq!(here.get("/v1/jobs").await.expect("list").status, 200);
    assert_eq!(there.get("/v1/jobs").await.expect("list").status, 200);

    let revoked = stack
        .client
        .with_key(&admin)
        .delete(&format!("/v1/keys/{}", id_of(&tenant_key)))
        .await
        .expect("revoke");
    assert_eq!(
        revoked.status,
        200,
        "{}",
        String::from_utf8_lossy(&revoked.body)
    );
    let reply = here.get("/v1/jobs").await.expect("list");
    expect(
        &reply,
        401,
        "credential_revoked",
        "on the gateway that revoked it",
        None,
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let reply = there.get("/v1/jobs").await.expect("list");
        if reply.status == 401 {
            expect(
                &reply,
                401,
                "credential_revoked",
                "on the other gateway",
                None,
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other gateway still accepts it"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stack.stop().await.expect("stop");
}

#[tokio::test]
async fn a_public_address_needs_an_explicit_auth_mode() {
    let dir = temp_dir();
    std::fs::create_dir_all(&dir).expect("dir");
    let run = |auth: Option<&str>| {
        let mut command = std::process::Command::new(binary("pixmill-gateway").expect("binary"));
        command
            .env("PIXMILL_HTTP_ADDR", "0.0.0.0:0")
            .env("PIXMILL_DATA_DIR", &dir)
            .env_remove("PIXMILL_AUTH");
        if let Some(mode) = auth {
            command.env("PIXMILL_AUTH", mode);
        }
        command
    };
    let output = tokio::time::timeout(TIMEOUT, async { run(None).output() })
        .await
        .expect("in time")
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("PIXMILL_AUTH"), "{stderr}");
    assert!(stderr.contains("not a loopback address"), "{stderr}");
    let output = run(Some("sometimes")).output().expect("runs");
    assert_eq!(output.status.code(), Some(64));
    let _ = std::fs::remove_dir_all(dir);
}
