//! What clients other than the upload form rely on: the events stream and the listing.

use std::time::Duration;

use futures_util::StreamExt;
use pixmill_tests::{Stack, TIMEOUT, photos::photo};

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
struct SseEvent {
    name: String,
    id: String,
    data: serde_json::Value,
}

/// Reads a whole event stream (until the server closes it), with its comment count.
async fn read_stream(base: &str, id: &str, last_event_id: Option<&str>) -> (Vec<SseEvent>, usize) {
    read_stream_until(base, id, last_event_id, |_| false).await
}

/// Reads events until the server closes the stream or `stop` says so.
async fn read_stream_until(
    base: &str,
    id: &str,
    last_event_id: Option<&str>,
    stop: impl Fn(&[SseEvent]) -> bool,
) -> (Vec<SseEvent>, usize) {
    let mut request = reqwest::Client::new().get(format!("{base}/v1/jobs/{id}/events"));
    if let Some(last) = last_event_id {
        request = request.header("last-event-id", last);
    }
    let response = request.send().await.expect("events");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().expect("type"),
        "text/event-stream"
    );
    let mut body = response.bytes_stream();
    let (mut buffer, mut events, mut comments) = (String::new(), Vec::new(), 0);
    let read = tokio::time::timeout(TIMEOUT, async {
        while let Some(chunk) = body.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let (mut name, mut id, mut data) = (String::new(), String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().into();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().into();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    } else if line.starts_with(':') {
                        comments += 1;
                    }
                }
                if !name.is_empty() {
                    let data = serde_json::from_str(&data).expect("event data is JSON");
                    events.push(SseEvent { name, id, data });
                    if stop(&events) {
                        return;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the stream did not close: {events:?}");
    (events, comments)
}

#[tokio::test]
async fn the_events_stream_shows_each_state_then_closes() {
    let mut stack = Stack::start().await.expect("start");
    let id = stack
        .client
        .submit_ok(&photo("flower.jpg"), &[("op", "resize"), ("width", "64")])
        .await
        .expect("submit");

    // No worker yet: the stream opens on `queued` and waits.
    let (first, _) = read_stream_until(&stack.base, &id, None, |e| !e.is_empty()).await;
    assert_eq!(first[0].name, "queued");
    assert_eq!(first[0].data["state"], "queued");

    // With a worker, the full stream runs to the end and closes by itself.
    let stream = tokio::spawn({
        let base = stack.base.clone();
        let id = id.clone();
        async move { read_stream(&base, &id, None).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack.add_worker("sse-worker", 1);
    let (events, _) = stream.await.expect("stream");
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    println!("events stream: {names:?}");
    assert_eq!(names.first(), Some(&"queued"));
    assert_eq!(names.last(), Some(&"succeeded"));
    let done = &events.last().expect("an event").data;
    assert_eq!(done["result"]["width"], 64, "{done}");
    assert_eq!(done["worker"], "sse-worker");
    let ids: Vec<i64> = events
        .iter()
        .map(|e| e.id.parse().expect("numeric id"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");

    // Reconnecting after the last event: nothing new, and the stream closes.
    let last = events.last().expect("last").id.clone();
    let (again, _) = read_stream(&stack.base, &id, Some(&last)).await;
    assert!(again.is_empty(), "{again:?}");
    // Reconnecting after the first: only what changed since, ending terminal.
    let (resumed, _) = read_stream(&stack.base, &id, Some(&events[0].id)).await;
    assert_eq!(resumed.last().map(|e| e.name.as_str()), Some("succeeded"));
    assert!(resumed.iter().all(|e| e.name != "queued"), "{resumed:?}");

    let missing = stack
        .client
        .get("/v1/jobs/7b0c4a8e-1f5d-4c1e-9a55-0d7e3c7a9b11/events")
        .await
        .expect("unknown");
    assert_eq!(missing.status, 404);
    stack.stop().await.expect("stop");
}

#[tokio::test]
async fn the_listing_pages_newest_first_and_filters_by_state() {
    let mut stack = Stack::start().await.expect("start");
    let image = photo("flower.jpg");
    let mut ids = Vec::new();
    for _ in 0..5 {
        let id = stack
            .client
            .submit_ok(&image, &[("op", "grayscale")])
            .await
            .expect("submit");
        ids.push(id);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cancelled = stack
        .client
        .delete(&format!("/v1/jobs/{}", ids[2]))
        .await
        .expect("cancel");
    assert_eq!(cancelled.status, 200);

    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = stack
            .client
            .get(&format!("/v1/jobs?limit=2&cursor={cursor}"))
            .await
            .expect("list")
            .json();
        let jobs = page["jobs"].as_array().expect("jobs").clone();
        assert!(jobs.len() <= 2);
        seen.extend(
            jobs.iter()
                .map(|j| j["id"].as_str().expect("id").to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    let only = stack
        .client
        .get("/v1/jobs?state=cancelled")
        .await
        .expect("list")
        .json();
    let only: Vec<&str> = only["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["id"].as_str().expect("id"))
        .collect();
    assert_eq!(only, vec![ids[2].as_str()]);

    for (query, names) in [
        ("state=pending", "state"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("cursor=nonsense", "cursor"),
    ] {
        let reply = stack
            .client
            .get(&format!("/v1/jobs?{query}"))
            .await
            .expect("bad");
        assert_eq!(reply.status, 422, "{query}");
        assert!(
            reply.error_message().contains(names),
            "{query}: {}",
            reply.error_message()
        );
    }
    stack.add_worker("list-worker", 1);
    for id in [&ids[0], &ids[4]] {
        stack.client.wait_terminal(id).await.expect("done");
    }
    stack.stop().await.expect("stop");
}
