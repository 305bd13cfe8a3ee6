//! `status`, `get`, `cancel` and `list` on real jobs.

use std::path::Path;

use pixmill_tests::{Stack, temp_dir};
use serde_json::Value;

use super::{photo, pixmill, size_of};

#[tokio::test]
async fn status_get_and_cancel() {
    // No worker yet, so the first job stays queued and can be cancelled.
    let mut stack = Stack::start().await.expect("start stack");
    let base = stack.base.clone();
    let flower = photo("flower.jpg");
    let run = pixmill(&base, &["submit", &flower, "--grayscale", "--json"]).await;
    assert_eq!(run.code, 0, "{run:#?}");
    let queued = run.json()[0]["id"].as_str().expect("id").to_string();

    let run = pixmill(&base, &["status", &queued, "--json"]).await;
    assert_eq!(
        (run.code, run.json()["state"].as_str()),
        (0, Some("queued"))
    );
    let dir = temp_dir();
    std::fs::create_dir_all(&dir).expect("dir");
    let early = dir.join("early.jpg").display().to_string();
    let run = pixmill(&base, &["get", &queued, "-o", &early]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("not_ready: "), "{run:#?}");
    assert!(
        !Path::new(&early).exists(),
        "nothing is written for an error"
    );

    let run = pixmill(&base, &["cancel", &queued, "--json"]).await;
    assert_eq!(
        (run.code, run.json()["state"].as_str()),
        (0, Some("cancelled"))
    );
    let run = pixmill(&base, &["status", &queued, "--wait", "5"]).await;
    assert_eq!(
        run.code, 1,
        "a cancelled job, waited for, exits 1: {run:#?}"
    );
    assert!(run.stdout.contains("state     cancelled"), "{run:#?}");
    let run = pixmill(&base, &["get", &queued, "-o", &early]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("job_cancelled"), "{run:#?}");

    stack.add_worker("cli-worker", 2);
    let run = pixmill(&base, &["submit", &flower, "--resize", "200", "--json"]).await;
    assert_eq!(run.code, 0, "{run:#?}");
    let id = run.json()[0]["id"].as_str().expect("id").to_string();
    let run = pixmill(&base, &["status", &id, "--wait", "60", "--json"]).await;
    assert_eq!(
        (run.code, run.json()["state"].as_str()),
        (0, Some("succeeded")),
        "{run:#?}"
    );
    let run = pixmill(&base, &["status", &id]).await;
    assert!(
        run.stdout.contains("result    image/jpeg 200x133"),
        "{run:#?}"
    );

    let file = dir.join("result.jpg");
    let file_arg = file.display().to_string();
    let run = pixmill(&base, &["get", &id, "-o", &file_arg, "--json"]).await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.json()["content_type"], "image/jpeg");
    assert_eq!(size_of(&file), (200, 133));

    // On a finished job, cancel deletes the result.
    let run = pixmill(&base, &["cancel", &id, "--json"]).await;
    assert_eq!(
        (run.code, &run.json()["result_deleted"]),
        (0, &Value::Bool(true))
    );
    let run = pixmill(&base, &["get", &id, "-o", &file_arg]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("result_deleted: "), "{run:#?}");

    let unknown = uuid::Uuid::new_v4().to_string();
    let run = pixmill(&base, &["status", &unknown]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("not_found: "), "{run:#?}");
    let _ = std::fs::remove_dir_all(&dir);
    stack.stop().await.expect("stop");
}

/// Depends on the listing endpoint, `GET /v1/jobs?state=&limit=&cursor=`.
#[tokio::test]
async fn list_pages_through_jobs_newest_first() {
    let stack = Stack::start().await.expect("start stack");
    let base = stack.base.clone();
    let files: Vec<String> = ["flower.jpg", "china.jpg", "FreshFlower.jpg"]
        .iter()
        .map(|n| photo(n))
        .collect();
    let mut args = vec!["submit", "--swap", "--json", "--concurrency", "1"];
    args.extend(files.iter().map(String::as_str));
    let run = pixmill(&base, &args).await;
    assert_eq!(run.code, 0, "{run:#?}");
    let mut submitted: Vec<String> = run
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect();
    submitted.sort();

    let run = pixmill(&base, &["list", "--limit", "2", "--json"]).await;
    assert_eq!(run.code, 0, "{run:#?}");
    let page = run.json();
    assert_eq!(page["jobs"].as_array().map(Vec::len), Some(2), "{run:#?}");
    assert!(
        page["next_cursor"].is_string(),
        "a full page has a cursor: {run:#?}"
    );

    let run = pixmill(&base, &["list", "--limit", "2", "--all", "--json"]).await;
    assert_eq!(run.code, 0, "{run:#?}");
    let all = run.json();
    assert!(
        all["next_cursor"].is_null(),
        "--all reads to the end: {run:#?}"
    );
    let jobs = all["jobs"].as_array().expect("jobs").clone();
    let created: Vec<time::OffsetDateTime> = jobs
        .iter()
        .map(|j| {
            let at = j["created_at"].as_str().expect("created_at");
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                .expect("RFC 3339")
        })
        .collect();
    assert!(
        created.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {created:?}"
    );
    let mut listed: Vec<String> = jobs
        .iter()
        .map(|j| j["id"].as_str().expect("id").to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, submitted, "every job once, across pages");

    let cancelled = &submitted[0];
    assert_eq!(pixmill(&base, &["cancel", cancelled]).await.code, 0);
    let run = pixmill(&base, &["list", "--state", "cancelled", "--json"]).await;
    let ids: Vec<String> = run.json()["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ids, std::slice::from_ref(cancelled), "{run:#?}");
    let run = pixmill(&base, &["list"]).await;
    assert!(
        submitted.iter().all(|id| run.stdout.contains(id.as_str())),
        "{run:#?}"
    );
    stack.stop().await.expect("stop");
}
