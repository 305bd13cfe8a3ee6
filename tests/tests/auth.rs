//! Authentication end to end, with `PIXMILL_AUTH=required`: every API route against
//! every kind of bad credential, scopes, tenant isolation (ids, results, events,
//! listings, idempotency keys), the `keys` command beside a running gateway, and the
//! refusal to start on a public address without a decision.

use std::time::Duration;

use pixmill_gateway::{
    auth::{self, ApiScope, AuthMode, KeyRequest},
    store::Store,
};
use pixmill_tests::{Client, Reply, Stack, TIMEOUT, binary, common, photos::photo, temp_dir};
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

/// One request of the matrix.
#[derive(Debug, Clone, Copy)]
enum Call {
    Submit,
    List,
    Status,
    Events,
    Result,
    Delete,
    Stats,
    Metrics,
    ListKeys,
    CreateKey,
    RevokeKey,
}

impl Call {
    const ALL: [Call; 11] = [
        Call::Submit,
        Call::List,
        Call::Status,
        Call::Events,
        Call::Result,
        Call::Delete,
        Call::Stats,
        Call::Metrics,
        Call::ListKeys,
        Call::CreateKey,
        Call::RevokeKey,
    ];

    /// The scope the route needs.
    fn scope(self) -> &'static str {
        match self {
            Call::Submit | Call::Delete => "jobs:write",
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
            Call::Stats => client.get("/v1/stats").await,
            Call::Metrics => client.get("/metrics").await,
            Call::ListKeys => client.get("/v1/keys").await,
            Call::CreateKey => {
                client
                    .post_json("/v1/keys", &serde_json::json!({"tenant": "made"}))
                    .await
            }
            Call::RevokeKey => client.delete(&format!("/v1/keys/{victim}")).await,
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

#[tokio::test]
async fn every_route_refuses_bad_credentials_and_confines_tenants() {
    let common = common(&format!("test-{}", Uuid::new_v4().simple()), &temp_dir());
    let mut stack = Stack::start_configured(common, |s| s.auth = AuthMode::Required)
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

    // Alpha's job, with an idempotency key, run to the end.
    let (alpha, beta, root) = (
        gateway.with_key(&a_writer),
        gateway.with_key(&b_writer),
        gateway.with_key(&admin),
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

    // Bad credentials, on every route: the same refusal everywhere.
    let bad: [(&str, String, &str, Option<&str>); 5] = [
        ("none", String::new(), "credential_missing", None),
        (
            "malformed",
            "Bearer pmk_nonsense".into(),
            "credential_malformed",
            None,
        ),
        (
            "unknown",
            format!("Bearer {unknown}"),
            "credential_invalid",
            Some(&unknown[21..]),
        ),
        (
            "expired",
            format!("Bearer {expired}"),
            "credential_expired",
            Some(&expired[21..]),
        ),
        (
            "revoked",
            format!("Bearer {revoked}"),
            "credential_revoked",
            Some(&revoked[21..]),
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
                &format!("{call:?} with {what} key"),
                *secret,
            );
        }
    }

    // Valid keys without the route's scope: 403, naming the scope.
    let reader = gateway.with_key(&a_reader);
    for call in Call::ALL {
        let needs = call.scope();
        let clients: Vec<(&str, &Client)> = match needs {
            "jobs:write" => vec![("read-only", &reader)],
            "admin" => vec![("read-only", &reader), ("tenant writer", &alpha)],
            _ => vec![],
        };
        for (what, client) in clients {
            let reply = call.send(client, &job, &victim).await;
            expect(
                &reply,
                403,
                "insufficient_scope",
                &format!("{call:?} with a {what} key"),
                None,
            );
            assert!(
                reply.error_message().contains(needs),
                "{call:?}: {}",
                reply.error_message()
            );
        }
    }

    // Another tenant's job is not found, exactly like an unknown id.
    for call in [Call::Status, Call::Events, Call::Result, Call::Delete] {
        let reply = call.send(&beta, &job, &victim).await;
        expect(
            &reply,
            404,
            "not_found",
            &format!("{call:?} by another tenant"),
            None,
        );
        let unknown_id = Uuid::new_v4().to_string();
        let reply = call.send(&beta, &unknown_id, &victim).await;
        expect(
            &reply,
            404,
            "not_found",
            &format!("{call:?} of an unknown id"),
            None,
        );
    }
    // The reader of alpha sees its tenant's job, result and events.
    assert_eq!(Call::Status.send(&reader, &job, &victim).await.status, 200);
    assert_eq!(Call::Result.send(&reader, &job, &victim).await.status, 200);
    assert_eq!(Call::Events.send(&reader, &job, &victim).await.status, 200);

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
    assert_eq!(
        ids(alpha.get("/v1/jobs").await.expect("list")),
        vec![job.clone()]
    );
    let refused = beta.get("/v1/jobs?tenant=alpha").await.expect("list");
    expect(
        &refused,
        403,
        "insufficient_scope",
        "beta listing alpha",
        None,
    );

    // Idempotency keys are per tenant: beta's "order-1" is a new job of its own.
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
    assert_eq!(
        ids(beta.get("/v1/jobs").await.expect("list")),
        vec![beta_job.clone()]
    );

    let mut everyone = ids(root.get("/v1/jobs").await.expect("list"));
    everyone.sort();
    let mut both = vec![job.clone(), beta_job.clone()];
    both.sort();
    assert_eq!(everyone, both, "admin sees every tenant's jobs");
    assert_eq!(
        ids(root.get("/v1/jobs?tenant=alpha").await.expect("list")),
        vec![job.clone()]
    );
    assert_eq!(
        root.get(&format!("/v1/jobs/{beta_job}"))
            .await
            .expect("get")
            .status,
        200
    );
    assert_eq!(root.get("/v1/stats").await.expect("stats").status, 200);
    assert_eq!(root.get("/metrics").await.expect("metrics").status, 200);

    // Probes need no key; /readyz names internal addresses only to admins.
    assert_eq!(gateway.get("/healthz").await.expect("healthz").status, 200);
    let anonymous = gateway.get("/readyz").await.expect("readyz").json();
    assert!(anonymous["broker_node"].is_null(), "{anonymous}");
    assert_eq!(anonymous["blob_store"], "folder", "{anonymous}");
    let full = root.get("/readyz").await.expect("readyz").json();
    assert!(full["broker_node"].is_string(), "{full}");
    assert!(
        full["blob_store"]
            .as_str()
            .unwrap_or_default()
            .starts_with("folder "),
        "{full}"
    );

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
