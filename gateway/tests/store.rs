//! One task-store suite, run against every backend: the same checks for SQLite and for
//! PostgreSQL, so the two cannot drift apart.
//!
//! PostgreSQL comes from `PIXMILL_TEST_DATABASE_URL` (`make test` starts a throwaway
//! cluster and sets it); each check gets a fresh database of its own. Without the
//! variable only SQLite runs, unless `PIXMILL_TEST_REQUIRE_BACKENDS=1` (as `make test`
//! sets), which turns the missing server into a failure.

use std::{future::Future, path::PathBuf, sync::Arc};

use pixmill_gateway::store::{
    Admission, ApiKey, Change, DatabaseUrl, Finished, JobError, JobState, LOCAL_TENANT, NewJob,
    Scope, Store, StoreError, Sweep, open, postgres::PgStore,
};
use pixmill_shared::{JobResult, OutputFormat, Step, Variant, VariantOutput};
use uuid::Uuid;

/// A backend under test, and a way to open a second handle on the same data (another
/// gateway, for PostgreSQL).
struct Backend {
    name: &'static str,
    store: Store,
    url: DatabaseUrl,
}

impl Backend {
    async fn second_handle(&self) -> Store {
        match &self.url {
            // SQLite serves one gateway per file: the second "gateway" shares the handle.
            DatabaseUrl::Sqlite(_) => self.store.clone(),
            DatabaseUrl::Postgres(url) => Arc::new(PgStore::connect(url).await.expect("connect")),
        }
    }
}

/// A fresh, empty store on every configured backend.
async fn backends() -> Vec<Backend> {
    let path = std::env::temp_dir().join(format!("pixmill-store-{}.db", Uuid::new_v4()));
    let sqlite = DatabaseUrl::Sqlite(path);
    let mut all = vec![Backend {
        name: "sqlite",
        store: open(&sqlite).await.expect("open sqlite"),
        url: sqlite,
    }];
    match std::env::var("PIXMILL_TEST_DATABASE_URL") {
        Ok(admin) if !admin.is_empty() => {
            let url = DatabaseUrl::Postgres(fresh_database(&admin).await);
            all.push(Backend {
                name: "postgres",
                store: open(&url).await.expect("open postgres"),
                url,
            });
        }
        _ if std::env::var("PIXMILL_TEST_REQUIRE_BACKENDS").as_deref() == Ok("1") => {
            panic!("PIXMILL_TEST_DATABASE_URL is not set; run `make test`, which starts PostgreSQL")
        }
        _ => eprintln!("store suite: PIXMILL_TEST_DATABASE_URL unset, PostgreSQL skipped"),
    }
    all
}

/// Creates an empty database next to the one `admin` names, and returns its URL.
async fn fresh_database(admin: &str) -> String {
    let name = format!("pixmill_test_{}", Uuid::new_v4().simple());
    pixmill_gateway::store::postgres::create_database(admin, &name)
        .await
        .expect("create a test database")
}

/// Runs `check` on every backend, naming each in the output.
async fn on_every_backend<F, Fut>(check_name: &str, check: F)
where
    F: Fn(Backend) -> Fut,
    Fut: Future<Output = ()>,
{
    for backend in backends().await {
        let name = backend.name;
        let file = match &backend.url {
            DatabaseUrl::Sqlite(path) => Some(path.clone()),
            DatabaseUrl::Postgres(_) => None,
        };
        check(backend).await;
        println!("store suite [{name}] {check_name}: ok");
        // The SQLite file and its companions go once the check has passed.
        for path in file.iter().flat_map(|db| {
            ["", "-wal", "-shm", ".lock"].map(|suffix| {
                let mut name = db.as_os_str().to_owned();
                name.push(suffix);
                PathBuf::from(name)
            })
        }) {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn new_job(id: Uuid) -> NewJob {
    NewJob {
        id,
        tenant: LOCAL_TENANT.into(),
        steps: vec![Step::Grayscale {}.into(), Step::Blur { sigma: 2.5 }.into()],
        format: OutputFormat::Png,
        quality: 85,
        input_key: format!("inputs/{id}"),
        idempotency: None,
        callback_url: None,
        variants: Vec::new(),
    }
}

fn result() -> JobResult {
    JobResult {
        key: "results/x.png".into(),
        content_type: "image/png".into(),
        width: 1,
        height: 2,
        bytes: 3,
        processing_ms: 4,
        outputs: Vec::new(),
    }
}

fn running(worker: &str, attempt: u32) -> Change {
    Change::Running {
        worker: worker.into(),
        attempt,
    }
}

#[tokio::test]
async fn a_job_moves_forward_only() {
    on_every_backend("a_job_moves_forward_only", |b| async move {
        let store = b.store;
        let id = Uuid::new_v4();
        store
            .insert(new_job(id), Admission::unlimited())
            .await
            .expect("insert");
        let job = store
            .get(&Scope::All, id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(job.state, JobState::Queued);
        assert_eq!(
            job.steps,
            vec![Step::Grayscale {}.into(), Step::Blur { sigma: 2.5 }.into()]
        );

        let job = store
            .apply(id, running("w1", 1))
            .await
            .expect("running")
            .expect("applied");
        assert_eq!((job.state, job.attempts), (JobState::Running, 1));
        assert!(job.started_at.is_some());
        let started_at = job.started_at;
        // The start was reported, so a start time on the final change is ignored.
        let succeeded = Change::Succeeded {
            worker: "w1".into(),
            attempt: 1,
            result: result(),
            started_at: Some(1),
            hops: Vec::new(),
        };
        let job = store
            .apply(id, succeeded.clone())
            .await
            .expect("succeeded")
            .expect("applied");
        assert_eq!(job.state, JobState::Succeeded);
        assert_eq!(job.result, Some(result()));
        assert_eq!(job.started_at, started_at);

        // A late `started`, a duplicate terminal reply, a late failure and a cancel
        // change nothing.
        let failed = Change::Failed {
            worker: None,
            attempt: 2,
            code: "internal".into(),
            message: "x".into(),
            started_at: None,
            hops: Vec::new(),
        };
        for late in [running("w2", 2), succeeded, failed, Change::Cancelled] {
            assert_eq!(
                store.apply(id, late.clone()).await.expect("late"),
                None,
                "{late:?}"
            );
        }
        let job = store
            .get(&Scope::All, id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(job.state, JobState::Succeeded);
        assert_eq!(job.worker.as_deref(), Some("w1"));
        assert_eq!(job.attempts, 1);
        assert!(job.finished_at.is_some());

        // Expiry is the one move left from a finished job.
        let job = store.apply(id, Change::Expired).await.expect("expire");
        assert_eq!(job.map(|j| j.state), Some(JobState::Expired));
        assert_eq!(store.apply(id, Change::Expired).await.expect("again"), None);
    })
    .await;
}

#[tokio::test]
async fn failures_keep_the_worker_and_cancels_need_a_queued_job() {
    on_every_backend("failures_and_cancels", |b| async move {
        let store = b.store;
        let (failing, cancelled) = (Uuid::new_v4(), Uuid::new_v4());
        store
            .insert(new_job(failing), Admission::unlimited())
            .await
            .expect("insert");
        store
            .insert(new_job(cancelled), Admission::unlimited())
            .await
            .expect("insert");

        store.apply(failing, running("w1", 3)).await.expect("run");
        let job = store
            .apply(
                failing,
                Change::Failed {
                    worker: None,
                    attempt: 3,
                    code: "timeout".into(),
                    message: "too slow".into(),
                    started_at: None,
                    hops: Vec::new(),
                },
            )
            .await
            .expect("fail")
            .expect("applied");
        assert_eq!(job.state, JobState::Failed);
        assert_eq!(
            job.worker.as_deref(),
            Some("w1"),
            "a dead-letter keeps the last worker"
        );
        assert_eq!(
            job.error,
            Some(JobError {
                code: "timeout".into(),
                message: "too slow".into()
            })
        );
        assert_eq!(
            job.event().error.map(|e| e.code).as_deref(),
            Some("timeout")
        );

        let job = store
            .apply(cancelled, Change::Cancelled)
            .await
            .expect("cancel")
            .expect("applied");
        assert_eq!(job.state, JobState::Cancelled);
        assert_eq!(job.error.map(|e| e.code).as_deref(), Some("cancelled"));
        assert_eq!(
            store
                .apply(cancelled, running("w1", 1))
                .await
                .expect("late start"),
            None
        );
    })
    .await;
}

#[tokio::test]
async fn unknown_and_deleted_jobs_are_absent() {
    on_every_backend("unknown_and_deleted_jobs_are_absent", |b| async move {
        let store = b.store;
        let id = Uuid::new_v4();
        assert_eq!(store.get(&Scope::All, id).await.expect("get"), None);
        assert_eq!(store.apply(id, running("w", 1)).await.expect("apply"), None);
        store
            .insert(new_job(id), Admission::unlimited())
            .await
            .expect("insert");
        store.delete(id).await.expect("delete");
        assert_eq!(store.get(&Scope::All, id).await.expect("get"), None);
        store.ping().await.expect("ping");
        assert_eq!(store.backend(), b.name);
    })
    .await;
}

#[tokio::test]
async fn variants_and_their_outputs_are_kept() {
    on_every_backend("variants_and_their_outputs_are_kept", |b| async move {
        let store = b.store;
        let id = Uuid::new_v4();
        let variants = vec![
            Variant {
                name: "w320".into(),
                steps: vec![Step::Resize {
                    width: Some(320),
                    height: None,
                    fit: pixmill_shared::Fit::Cover,
                }],
                format: OutputFormat::Jpeg,
                quality: 80,
            },
            Variant {
                name: "w320-webp".into(),
                steps: Vec::new(),
                format: OutputFormat::Webp,
                quality: 75,
            },
        ];
        store
            .insert(
                NewJob {
                    variants: variants.clone(),
                    ..new_job(id)
                },
                Admission::unlimited(),
            )
            .await
            .expect("insert");
        let stored = store.get(&Scope::All, id).await.expect("get").expect("job");
        assert_eq!(stored.variants, variants);
        let outputs: Vec<VariantOutput> = variants
            .iter()
            .map(|v| VariantOutput {
                name: v.name.clone(),
                key: pixmill_shared::keys::variant(id, &v.name, v.format),
                content_type: v.format.content_type().into(),
                width: 320,
                height: 200,
                bytes: 1000,
            })
            .collect();
        let result = JobResult {
            key: outputs[0].key.clone(),
            outputs: outputs.clone(),
            ..result()
        };
        let job = store
            .apply(
                id,
                Change::Succeeded {
                    worker: "w1".into(),
                    attempt: 1,
                    result: result.clone(),
                    started_at: Some(1),
                    hops: Vec::new(),
                },
            )
            .await
            .expect("apply")
            .expect("applied");
        assert_eq!(job.result.as_ref(), Some(&result));
        let read = store.get(&Scope::All, id).await.expect("get").expect("job");
        assert_eq!(read.result.as_ref().map(|r| &r.outputs), Some(&outputs));
        assert_eq!(
            read.result_keys(),
            [outputs[0].key.clone(), outputs[1].key.clone()]
        );
        // A job without variants reads back without any.
        let plain = Uuid::new_v4();
        store
            .insert(new_job(plain), Admission::unlimited())
            .await
            .expect("insert");
        let plain = store
            .get(&Scope::All, plain)
            .await
            .expect("get")
            .expect("job");
        assert!(plain.variants.is_empty());
    })
    .await;
}

#[tokio::test]
async fn idempotency_keys_are_unique() {
    on_every_backend("idempotency_keys_are_unique", |b| async move {
        let store = b.store;
        let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
        let key = format!("key-{first}");
        let keyed = |id| NewJob {
            idempotency: Some((key.clone(), "hash-1".into())),
            ..new_job(id)
        };
        store
            .insert(keyed(first), Admission::unlimited())
            .await
            .expect("insert");
        let err = store
            .insert(keyed(second), Admission::unlimited())
            .await
            .expect_err("duplicate");
        assert!(matches!(err, StoreError::DuplicateKey), "{err}");
        let (job, hash) = store
            .find_by_key(LOCAL_TENANT, &key)
            .await
            .expect("find")
            .expect("found");
        assert_eq!((job.id, hash.as_str()), (first, "hash-1"));
        assert_eq!(
            store
                .find_by_key(LOCAL_TENANT, "no-such-key")
                .await
                .expect("find"),
            None
        );
    })
    .await;
}

#[tokio::test]
async fn publish_and_deletion_marks_are_recorded() {
    on_every_backend("publish_and_deletion_marks", |b| async move {
        let store = b.store;
        let id = Uuid::new_v4();
        store
            .insert(new_job(id), Admission::unlimited())
            .await
            .expect("insert");
        assert_eq!(
            store
                .get(&Scope::All, id)
                .await
                .expect("get")
                .and_then(|j| j.published_at),
            None
        );
        store.mark_published(&[id]).await.expect("published");
        store.mark_republished(id).await.expect("republished");
        store.mark_result_deleted(id).await.expect("deleted");
        let job = store
            .get(&Scope::All, id)
            .await
            .expect("get")
            .expect("exists");
        assert!(job.published_at.is_some());
        assert_eq!(job.republished, 1);
        assert!(job.result_deleted_at.is_some());
    })
    .await;
}

#[tokio::test]
async fn each_sweep_claims_its_jobs_once_per_lease() {
    on_every_backend(
        "each_sweep_claims_its_jobs_once_per_lease",
        |b| async move {
            let store = b.store.clone();
            let other = b.second_handle().await;
            let (unpublished, published, stale, finished) = (
                Uuid::new_v4(),
                Uuid::new_v4(),
                Uuid::new_v4(),
                Uuid::new_v4(),
            );
            for id in [unpublished, published, stale, finished] {
                store
                    .insert(new_job(id), Admission::unlimited())
                    .await
                    .expect("insert");
            }
            store.mark_published(&[published]).await.expect("published");
            for id in [stale, finished] {
                store.mark_published(&[id]).await.expect("published");
                store.apply(id, running("w", 1)).await.expect("running");
            }
            store
                .apply(
                    finished,
                    Change::Succeeded {
                        worker: "w".into(),
                        attempt: 1,
                        result: result(),
                        started_at: None,
                        hops: Vec::new(),
                    },
                )
                .await
                .expect("succeeded");

            let future = pixmill_shared::now_ms() + 60_000;
            let lease = pixmill_shared::now_ms() + 60_000;
            let ids = |jobs: Vec<pixmill_gateway::store::Job>| -> Vec<Uuid> {
                jobs.into_iter().map(|j| j.id).collect()
            };
            let claimed = store
                .claim(Sweep::Unpublished, future, 10, lease)
                .await
                .expect("claim");
            assert_eq!(ids(claimed), vec![unpublished]);
            // Another gateway's pass finds it leased.
            let again = other
                .claim(Sweep::Unpublished, future, 10, lease)
                .await
                .expect("claim");
            assert_eq!(ids(again), Vec::<Uuid>::new());
            // Released, it can be claimed again at once.
            store.release(unpublished).await.expect("release");
            let again = other
                .claim(Sweep::Unpublished, future, 10, lease)
                .await
                .expect("claim");
            assert_eq!(ids(again), vec![unpublished]);

            let stale_claim = other
                .claim(Sweep::StaleRunning, future, 10, lease)
                .await
                .expect("claim");
            assert_eq!(ids(stale_claim), vec![stale]);
            let expiry = store
                .claim(Sweep::Expiry, future, 10, lease)
                .await
                .expect("claim");
            assert_eq!(ids(expiry), vec![finished]);
            // A cutoff in the past selects nothing.
            store.release(finished).await.expect("release");
            let none = store
                .claim(Sweep::Expiry, 0, 10, lease)
                .await
                .expect("claim");
            assert_eq!(ids(none), Vec::<Uuid>::new());
        },
    )
    .await;
}

#[tokio::test]
async fn concurrent_passes_never_claim_the_same_job() {
    on_every_backend(
        "concurrent_passes_never_claim_the_same_job",
        |b| async move {
            let store = b.store.clone();
            let other = b.second_handle().await;
            let mut all: Vec<Uuid> = (0..60).map(|_| Uuid::new_v4()).collect();
            for id in &all {
                store
                    .insert(new_job(*id), Admission::unlimited())
                    .await
                    .expect("insert");
            }
            let future = pixmill_shared::now_ms() + 60_000;
            let lease = future;
            let mut claimed = Vec::new();
            // Two "gateways" claim in small batches, side by side, until nothing is left.
            loop {
                let (a, b) = tokio::join!(
                    store.claim(Sweep::Unpublished, future, 7, lease),
                    other.claim(Sweep::Unpublished, future, 7, lease),
                );
                let (a, b) = (a.expect("claim a"), b.expect("claim b"));
                if a.is_empty() && b.is_empty() {
                    break;
                }
                claimed.extend(a.into_iter().chain(b).map(|j| j.id));
            }
            claimed.sort();
            all.sort();
            assert_eq!(claimed, all, "every job claimed exactly once");
        },
    )
    .await;
}

#[tokio::test]
async fn recently_finished_jobs_feed_the_stats() {
    on_every_backend("recently_finished_jobs_feed_the_stats", |b| async move {
        let store = b.store;
        let since = pixmill_shared::now_ms() - 1;
        let (ok, bad, open_job) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        for id in [ok, bad, open_job] {
            store
                .insert(new_job(id), Admission::unlimited())
                .await
                .expect("insert");
        }
        let hops = vec![
            pixmill_shared::Hop {
                worker: "w1".into(),
                from: 0,
                to: 1,
                ms: 3,
            },
            pixmill_shared::Hop {
                worker: "py-1".into(),
                from: 1,
                to: 2,
                ms: 9,
            },
        ];
        // Straight from queued, as a quick job goes: the worker's start time is kept.
        let succeeded = Change::Succeeded {
            worker: "w".into(),
            attempt: 1,
            result: result(),
            started_at: Some(since - 5),
            hops: hops.clone(),
        };
        let done = store
            .apply(ok, succeeded)
            .await
            .expect("succeeded")
            .expect("applied");
        assert_eq!(done.started_at, Some(since - 5));
        assert_eq!(done.hops, hops, "the routing slip's hops are kept");
        let read = store
            .get(&Scope::All, ok)
            .await
            .expect("get")
            .expect("found");
        assert_eq!(read.hops, hops);
        let failed = Change::Failed {
            worker: None,
            attempt: 1,
            code: "timeout".into(),
            message: "slow".into(),
            started_at: None,
            hops: Vec::new(),
        };
        store.apply(bad, failed).await.expect("failed");
        let mut rows = store.recently_finished(since, 10).await.expect("recent");
        rows.sort_by_key(|row| row.state.as_str());
        let ops = || {
            new_job(ok)
                .steps
                .iter()
                .map(|s| s.op().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            rows,
            vec![
                Finished {
                    state: JobState::Failed,
                    processing_ms: None,
                    ops: ops(),
                },
                Finished {
                    state: JobState::Succeeded,
                    processing_ms: Some(4),
                    ops: ops(),
                }
            ]
        );
        let future = pixmill_shared::now_ms() + 60_000;
        assert_eq!(
            store.recently_finished(future, 10).await.expect("none"),
            vec![]
        );
    })
    .await;
}

#[tokio::test]
async fn listing_pages_newest_first_by_state() {
    on_every_backend("listing_pages_newest_first_by_state", |b| async move {
        let store = b.store;
        let mut ids = Vec::new();
        for _ in 0..7 {
            let id = Uuid::new_v4();
            store
                .insert(new_job(id), Admission::unlimited())
                .await
                .expect("insert");
            ids.push(id);
            // Distinct creation times, so "newest first" is well defined.
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
        store
            .apply(ids[1], Change::Cancelled)
            .await
            .expect("cancel");
        store
            .apply(ids[4], Change::Cancelled)
            .await
            .expect("cancel");

        // Pages of 3, newest first, each continuing after the last one seen.
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = store
                .list(&Scope::All, None, before, 3)
                .await
                .expect("list");
            assert!(page.len() <= 3);
            let Some(last) = page.last() else { break };
            before = Some((last.created_at, last.id));
            seen.extend(page.iter().map(|j| j.id));
        }
        let newest_first: Vec<Uuid> = ids.iter().rev().copied().collect();
        assert_eq!(seen, newest_first);

        let cancelled = store
            .list(&Scope::All, Some(JobState::Cancelled), None, 10)
            .await
            .expect("list");
        let cancelled: Vec<Uuid> = cancelled.into_iter().map(|j| j.id).collect();
        assert_eq!(cancelled, vec![ids[4], ids[1]]);
        let failed = store
            .list(&Scope::All, Some(JobState::Failed), None, 10)
            .await
            .expect("list");
        assert!(failed.is_empty());
    })
    .await;
}

#[tokio::test]
async fn webhook_deliveries_are_claimed_and_recorded() {
    on_every_backend(
        "webhook_deliveries_are_claimed_and_recorded",
        |b| async move {
            use pixmill_gateway::store::{Attempt, Callback, CallbackState};
            let store = b.store;
            let (hooked, plain) = (Uuid::new_v4(), Uuid::new_v4());
            store
                .insert(
                    NewJob {
                        callback_url: Some("https://example.com/hook".into()),
                        ..new_job(hooked)
                    },
                    Admission::unlimited(),
                )
                .await
                .expect("insert");
            store
                .insert(new_job(plain), Admission::unlimited())
                .await
                .expect("insert");
            let now = pixmill_shared::now_ms();
            // Not due while the job runs; due once it has ended.
            assert!(
                store
                    .claim(Sweep::Webhooks, now, 10, now + 60_000)
                    .await
                    .expect("claim")
                    .is_empty()
            );
            for id in [hooked, plain] {
                store.apply(id, Change::Cancelled).await.expect("cancel");
            }
            let due = store
                .claim(Sweep::Webhooks, now + 1, 10, now + 60_000)
                .await
                .expect("claim");
            assert_eq!(due.iter().map(|j| j.id).collect::<Vec<_>>(), vec![hooked]);
            let mut callback = due[0].callback.clone().expect("callback");
            assert_eq!(
                (callback.url.as_str(), callback.state),
                ("https://example.com/hook", CallbackState::Pending)
            );
            callback.attempts.push(Attempt {
                at_ms: now,
                status: Some(503),
                error: Some("the receiver answered 503".into()),
            });
            store
                .record_callback(hooked, &callback, Some(now + 1_000))
                .await
                .expect("record");
            let later = now + 2_000;
            let again = store
                .claim(Sweep::Webhooks, later, 10, later + 60_000)
                .await
                .expect("claim");
            assert_eq!(again.len(), 1, "due again after its back-off");
            let delivered = Callback {
                state: CallbackState::Delivered,
                ..callback.clone()
            };
            store
                .record_callback(hooked, &delivered, None)
                .await
                .expect("record");
            let job = store
                .get(&Scope::All, hooked)
                .await
                .expect("get")
                .expect("exists");
            assert_eq!(job.callback, Some(delivered));
            let done = store
                .claim(Sweep::Webhooks, later + 10_000, 10, later + 70_000)
                .await
                .expect("claim");
            assert!(done.is_empty(), "a delivered callback is never due again");
        },
    )
    .await;
}

#[tokio::test]
async fn tenants_see_only_their_own_jobs() {
    on_every_backend("tenants_see_only_their_own_jobs", |b| async move {
        let store = b.store;
        let (a, b_job) = (Uuid::new_v4(), Uuid::new_v4());
        let key = format!("shared-key-{a}");
        let of = |tenant: &str, id, hash: &str| NewJob {
            tenant: tenant.into(),
            idempotency: Some((key.clone(), hash.into())),
            ..new_job(id)
        };
        store
            .insert(of("alpha", a, "hash-a"), Admission::unlimited())
            .await
            .expect("insert a");
        // The same idempotency key is free for another tenant.
        store
            .insert(of("beta", b_job, "hash-b"), Admission::unlimited())
            .await
            .expect("insert b");
        let (alpha, beta) = (Scope::tenant("alpha"), Scope::tenant("beta"));

        let job = store.get(&alpha, a).await.expect("get").expect("own job");
        assert_eq!(job.tenant, "alpha");
        assert_eq!(store.get(&beta, a).await.expect("get"), None);
        assert_eq!(store.get(&alpha, b_job).await.expect("get"), None);
        assert!(store.get(&Scope::All, a).await.expect("get").is_some());
        assert!(store.get(&Scope::All, b_job).await.expect("get").is_some());

        let (found, hash) = store
            .find_by_key("alpha", &key)
            .await
            .expect("find")
            .expect("found");
        assert_eq!((found.id, hash.as_str()), (a, "hash-a"));
        let (found, hash) = store
            .find_by_key("beta", &key)
            .await
            .expect("find")
            .expect("found");
        assert_eq!((found.id, hash.as_str()), (b_job, "hash-b"));
        assert_eq!(store.find_by_key("gamma", &key).await.expect("find"), None);
        // Within one tenant the key is still unique.
        let err = store
            .insert(
                of("alpha", Uuid::new_v4(), "hash-c"),
                Admission::unlimited(),
            )
            .await
            .expect_err("duplicate");
        assert!(matches!(err, StoreError::DuplicateKey), "{err}");

        let ids = |jobs: Vec<pixmill_gateway::store::Job>| -> Vec<Uuid> {
            jobs.into_iter().map(|j| j.id).collect()
        };
        let listed = store.list(&alpha, None, None, 10).await.expect("list");
        assert_eq!(ids(listed), vec![a]);
        let listed = store.list(&beta, None, None, 10).await.expect("list");
        assert_eq!(ids(listed), vec![b_job]);
        let listed = store
            .list(&Scope::tenant("gamma"), None, None, 10)
            .await
            .expect("list");
        assert!(listed.is_empty());
        let mut all = ids(store.list(&Scope::All, None, None, 10).await.expect("list"));
        all.sort();
        let mut both = vec![a, b_job];
        both.sort();
        assert_eq!(all, both);
        let queued = store
            .list(&beta, Some(JobState::Queued), None, 10)
            .await
            .expect("list");
        assert_eq!(ids(queued), vec![b_job]);
    })
    .await;
}

fn api_key(id: &str, tenant: &str, created_at: i64) -> ApiKey {
    ApiKey {
        id: id.into(),
        tenant: tenant.into(),
        scopes: vec!["jobs:write".into(), "jobs:read".into()],
        secret_hash: vec![7; 32],
        label: None,
        created_at,
        expires_at: None,
        revoked_at: None,
    }
}

#[tokio::test]
async fn api_keys_are_created_listed_and_revoked() {
    on_every_backend("api_keys_are_created_listed_and_revoked", |b| async move {
        let store = b.store;
        let now = pixmill_shared::now_ms();
        let first = ApiKey {
            label: Some("ci uploads".into()),
            expires_at: Some(now + 3_600_000),
            ..api_key("k1", "alpha", now)
        };
        let second = ApiKey {
            scopes: vec!["admin".into()],
            ..api_key("k2", "beta", now + 1)
        };
        store.insert_api_key(&first).await.expect("insert");
        store.insert_api_key(&second).await.expect("insert");
        let err = store
            .insert_api_key(&api_key("k1", "gamma", now))
            .await
            .expect_err("duplicate id");
        assert!(matches!(err, StoreError::DuplicateKey), "{err}");

        assert_eq!(
            store.get_api_key("k1").await.expect("get"),
            Some(first.clone())
        );
        assert_eq!(store.get_api_key("nope").await.expect("get"), None);
        assert_eq!(
            store.list_api_keys(None).await.expect("list"),
            vec![first.clone(), second.clone()]
        );
        assert_eq!(
            store.list_api_keys(Some("beta")).await.expect("list"),
            vec![second.clone()]
        );
        assert!(
            store
                .list_api_keys(Some("gamma"))
                .await
                .expect("list")
                .is_empty()
        );

        let revoked = store
            .revoke_api_key("k1", now + 5)
            .await
            .expect("revoke")
            .expect("exists");
        assert_eq!(revoked.revoked_at, Some(now + 5));
        // Revoking again keeps the first time.
        let again = store
            .revoke_api_key("k1", now + 9)
            .await
            .expect("revoke")
            .expect("exists");
        assert_eq!(again.revoked_at, Some(now + 5));
        assert_eq!(
            store.get_api_key("k1").await.expect("get"),
            Some(ApiKey {
                revoked_at: Some(now + 5),
                ..first
            })
        );
        assert_eq!(
            store.revoke_api_key("nope", now).await.expect("revoke"),
            None
        );
    })
    .await;
}

#[tokio::test]
async fn quotas_and_windows_admit_hold_and_release_in_turn() {
    on_every_backend(
        "quotas_and_windows_admit_hold_and_release_in_turn",
        |b| async move {
            let store = b.store.clone();
            let of = |tenant: &str| NewJob {
                tenant: tenant.into(),
                ..new_job(Uuid::new_v4())
            };
            let windowed = |interactive| Admission {
                max_inflight: 5,
                window: Some(2),
                interactive,
            };
            // Two released, then held up to the quota of 5; a sixth is refused.
            let mut admitted = Vec::new();
            let mut ids = Vec::new();
            for _ in 0..5 {
                let job = of("alpha");
                ids.push(job.id);
                admitted.push(store.insert(job, windowed(false)).await.expect("insert"));
            }
            use pixmill_gateway::store::Admitted::{Held, Released};
            assert_eq!(admitted, [Released, Released, Held, Held, Held]);
            let err = store
                .insert(of("alpha"), windowed(false))
                .await
                .expect_err("over the quota");
            assert!(
                matches!(err, StoreError::OverQuota { open: 5, max: 5 }),
                "{err}"
            );
            // Another tenant has its own quota and window.
            assert_eq!(
                store
                    .insert(of("beta"), windowed(false))
                    .await
                    .expect("beta"),
                Released
            );
            let flight = store.in_flight("alpha").await.expect("count");
            assert_eq!((flight.open, flight.held), (5, 3));
            assert_eq!(
                store.held_tenants().await.expect("held"),
                vec!["alpha".to_string()]
            );
            // A held job has no message, so the sweeper leaves it alone.
            let far = pixmill_shared::now_ms() + 60_000;
            let unpublished = store
                .claim(Sweep::Unpublished, far, 100, far)
                .await
                .expect("claim");
            let claimed: Vec<Uuid> = unpublished.iter().map(|j| j.id).collect();
            assert!(
                ids[2..].iter().all(|id| !claimed.contains(id)),
                "held jobs were claimed as unpublished"
            );
            for job in &unpublished {
                store.release(job.id).await.expect("release");
            }
            // The window is full: nothing to release yet.
            assert!(
                store
                    .release_held("alpha", 2)
                    .await
                    .expect("release")
                    .is_empty()
            );
            // One ends: the oldest held job goes, and only it.
            store
                .apply(ids[0], Change::Cancelled)
                .await
                .expect("apply")
                .expect("applied");
            let released = store.release_held("alpha", 2).await.expect("release");
            assert_eq!(
                released.iter().map(|j| j.id).collect::<Vec<_>>(),
                vec![ids[2]]
            );
            // An interactive job is released at once, past the window, and goes first.
            let page = of("alpha");
            let page_id = page.id;
            store
                .apply(ids[1], Change::Cancelled)
                .await
                .expect("apply")
                .expect("applied");
            assert_eq!(
                store
                    .insert(
                        page,
                        Admission {
                            max_inflight: 10,
                            ..windowed(true)
                        }
                    )
                    .await
                    .expect("page"),
                Released
            );
            let held_interactive = of("alpha");
            let held_id = held_interactive.id;
            for _ in 0..4 {
                store
                    .insert(
                        of("alpha"),
                        Admission {
                            max_inflight: 100,
                            ..windowed(true)
                        },
                    )
                    .await
                    .expect("interactive");
            }
            store
                .insert(
                    held_interactive,
                    Admission {
                        max_inflight: 100,
                        ..windowed(true)
                    },
                )
                .await
                .expect("held interactive");
            store
                .apply(page_id, Change::Cancelled)
                .await
                .expect("apply")
                .expect("applied");
            let released = store.release_held("alpha", 2).await.expect("release");
            assert_eq!(
                released.first().map(|j| j.id),
                Some(held_id),
                "the held interactive job goes before older bulk jobs"
            );
            assert!(store.get_tenant("alpha").await.expect("get").is_none());
        },
    )
    .await;
}

#[tokio::test]
async fn the_quota_holds_when_gateways_admit_at_once() {
    on_every_backend(
        "the_quota_holds_when_gateways_admit_at_once",
        |b| async move {
            let stores = [b.store.clone(), b.second_handle().await];
            let admission = Admission {
                max_inflight: 10,
                window: Some(3),
                interactive: false,
            };
            let mut tries = tokio::task::JoinSet::new();
            for i in 0..40 {
                let store = stores[i % 2].clone();
                tries.spawn(async move {
                    store
                        .insert(
                            NewJob {
                                tenant: "gamma".into(),
                                ..new_job(Uuid::new_v4())
                            },
                            admission,
                        )
                        .await
                });
            }
            let (mut released, mut held, mut refused) = (0, 0, 0);
            while let Some(outcome) = tries.join_next().await {
                match outcome.expect("task") {
                    Ok(pixmill_gateway::store::Admitted::Released) => released += 1,
                    Ok(pixmill_gateway::store::Admitted::Held) => held += 1,
                    Err(StoreError::OverQuota { .. }) => refused += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!((released, held, refused), (3, 7, 30));
            let flight = stores[1].in_flight("gamma").await.expect("count");
            assert_eq!((flight.open, flight.held), (10, 7));
        },
    )
    .await;
}

#[tokio::test]
async fn tenants_limits_are_stored_and_listed() {
    on_every_backend("tenants_limits_are_stored_and_listed", |b| async move {
        use pixmill_gateway::store::TenantLimits;
        let store = b.store;
        let set = TenantLimits::updated("acme", None, Some(Some(50)), Some(Some(2.5)), None);
        store.put_tenant(&set).await.expect("put");
        assert_eq!(
            store.get_tenant("acme").await.expect("get"),
            Some(set.clone())
        );
        let changed = TenantLimits::updated("acme", Some(set), None, Some(None), Some(Some(9)));
        store.put_tenant(&changed).await.expect("put");
        let got = store.get_tenant("acme").await.expect("get").expect("set");
        assert_eq!(
            (got.max_inflight, got.rate, got.burst),
            (Some(50), None, Some(9))
        );
        store
            .put_tenant(&TenantLimits::updated("zeta", None, None, None, None))
            .await
            .expect("put");
        let names: Vec<String> = store
            .list_tenants()
            .await
            .expect("list")
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["acme", "zeta"]);
    })
    .await;
}
