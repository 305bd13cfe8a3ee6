//! What a person reads: aligned tables and a job's record as labelled lines. `--json`
//! bypasses all of this and prints the records themselves.

use std::time::Duration;

use indicatif::HumanBytes;
use serde_json::Value;

use crate::{api::Job, steps};

/// Left-aligned columns, two spaces apart; the last column is not padded, so a long
/// path or error message does not drag trailing blanks onto every line.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let columns = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(cell);
                let pad = widths[i] - cell.chars().count() + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `320x200`, or `-` when the job has no result.
pub fn size(job: Option<&Job>) -> String {
    job.and_then(|j| j.result.as_ref())
        .map_or_else(|| "-".into(), |r| format!("{}x{}", r.width, r.height))
}

/// `1.3s`.
pub fn seconds(elapsed: Duration) -> String {
    format!("{:.1}s", elapsed.as_secs_f64())
}

fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// A job's record as labelled lines, for `status` and `cancel`.
pub fn job(job: &Job) -> String {
    let mut lines = vec![("id", job.id.clone()), ("state", job.state.to_string())];
    // A job with variants may have no steps of its own.
    if let Some(steps) = job.rest.get("steps").map(steps::describe)
        && !steps.is_empty()
    {
        lines.push(("steps", steps));
    }
    if let Some(r) = &job.result {
        let ms =
            text(r.rest.get("processing_ms")).map_or_else(String::new, |ms| format!(", {ms} ms"));
        lines.push((
            "result",
            format!(
                "{} {}x{}, {}{ms}",
                r.content_type,
                r.width,
                r.height,
                HumanBytes(r.bytes)
            ),
        ));
    }
    if let Some(Value::Array(variants)) = job.rest.get("variants") {
        for v in variants {
            let format = text(v.get("format")).unwrap_or_else(|| "?".into());
            let quality = text(v.get("quality"))
                .filter(|_| format == "jpeg")
                .map_or_else(String::new, |q| format!(" q{q}"));
            let steps = v.get("steps").map(steps::describe).unwrap_or_default();
            let steps = if steps.is_empty() {
                String::new()
            } else {
                format!("{steps}, ")
            };
            lines.push((
                "variant",
                format!(
                    "{}: {steps}{format}{quality}",
                    v["name"].as_str().unwrap_or("?")
                ),
            ));
        }
    }
    for o in job.result.iter().flat_map(|r| &r.outputs) {
        lines.push((
            "output",
            format!(
                "{}: {} {}x{}, {} ({})",
                o.name,
                o.content_type,
                o.width,
                o.height,
                HumanBytes(o.bytes),
                o.url
            ),
        ));
    }
    if job.rest.get("result_deleted") == Some(&Value::Bool(true)) {
        lines.push(("result", "deleted".into()));
    }
    if let Some(worker) = text(job.rest.get("worker")) {
        let attempts = text(job.rest.get("attempts")).unwrap_or_else(|| "?".into());
        lines.push(("worker", format!("{worker} (attempts: {attempts})")));
    }
    // A job several workers ran (custom ops): each hop, in order.
    if let Some(Value::Array(hops)) = job.rest.get("hops") {
        let described: Vec<String> = hops
            .iter()
            .map(|hop| {
                let ops: Vec<&str> = hop["ops"]
                    .as_array()
                    .map(|ops| ops.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                format!(
                    "{} ({}, {} ms)",
                    hop["worker"].as_str().unwrap_or("?"),
                    ops.join(", "),
                    hop["ms"]
                )
            })
            .collect();
        lines.push(("hops", described.join(" → ")));
    }
    for (label, field) in [
        ("created", "created_at"),
        ("started", "started_at"),
        ("finished", "finished_at"),
    ] {
        if let Some(at) = text(job.rest.get(field)) {
            lines.push((label, at));
        }
    }
    if let Some(e) = &job.error {
        lines.push(("error", format!("{}: {}", e.code, e.message)));
    }
    lines
        .into_iter()
        .map(|(label, value)| format!("{label:<9} {value}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Jobs as a table, for `list`.
pub fn jobs(jobs: &[Job]) -> String {
    if jobs.is_empty() {
        return "no jobs".into();
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.clone(),
                j.state.to_string(),
                text(j.rest.get("created_at")).unwrap_or_else(|| "-".into()),
                size(Some(j)),
                j.rest.get("steps").map(steps::describe).unwrap_or_default(),
                j.error
                    .as_ref()
                    .map_or_else(String::new, |e| e.code.clone()),
            ]
        })
        .collect();
    table(&["ID", "STATE", "CREATED", "SIZE", "STEPS", "ERROR"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_leave_no_trailing_blanks() {
        let t = table(
            &["A", "BB", "C"],
            &[
                vec!["long-cell".into(), "x".into(), "end".into()],
                vec!["y".into(), String::new(), String::new()],
            ],
        );
        assert_eq!(t, "A          BB  C\nlong-cell  x   end\ny");
    }

    #[test]
    fn a_job_reads_as_labelled_lines() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "id": "j1", "state": "failed", "steps": [{"op": "blur", "sigma": 2}],
            "worker": "w", "attempts": 1, "created_at": "2026-01-01T00:00:00Z",
            "started_at": null, "result": null,
            "error": {"code": "timeout", "message": "ran past 30 s"}
        }))
        .expect("job");
        let text = super::job(&job);
        assert!(text.contains("state     failed"), "{text}");
        assert!(text.contains("steps     blur 2"), "{text}");
        assert!(text.contains("error     timeout: ran past 30 s"), "{text}");
        assert!(!text.contains("started"), "{text}");
    }

    #[test]
    fn a_job_with_variants_lists_them_and_its_outputs() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "id": "j3", "state": "succeeded", "error": null, "steps": [],
            "variants": [
                {"name": "w320", "steps": [{"op": "resize", "width": 320}], "format": "jpeg", "quality": 80},
                {"name": "w640-webp", "steps": [{"op": "resize", "width": 640}], "format": "webp", "quality": 80}
            ],
            "result": {"content_type": "image/jpeg", "width": 320, "height": 213, "bytes": 2048,
                       "processing_ms": 9, "outputs": [
                {"name": "w320", "content_type": "image/jpeg", "width": 320, "height": 213,
                 "bytes": 2048, "url": "/v1/jobs/j3/result/w320"},
                {"name": "w640-webp", "content_type": "image/webp", "width": 640, "height": 427,
                 "bytes": 4096, "url": "/v1/jobs/j3/result/w640-webp"}
            ]}
        }))
        .expect("job");
        let text = super::job(&job);
        assert!(
            text.contains("variant   w320: resize 320, jpeg q80"),
            "{text}"
        );
        assert!(
            text.contains("variant   w640-webp: resize 640, webp\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "output    w640-webp: image/webp 640x427, 4.00 KiB (/v1/jobs/j3/result/w640-webp)"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_job_of_several_workers_lists_its_hops() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "id": "j2", "state": "succeeded", "result": null, "error": null,
            "steps": [{"op": "resize", "width": 320}, {"op": "posterize", "bits": 3}],
            "hops": [{"worker": "w1", "ops": ["resize"], "from": 0, "to": 1, "ms": 12},
                     {"worker": "py-1", "ops": ["posterize"], "from": 1, "to": 2, "ms": 30}]
        }))
        .expect("job");
        let text = super::job(&job);
        assert!(
            text.contains("hops      w1 (resize, 12 ms) → py-1 (posterize, 30 ms)"),
            "{text}"
        );
    }
}
