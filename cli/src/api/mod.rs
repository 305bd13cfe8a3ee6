//! The gateway's REST API as typed calls, with the retry policy in one place.
//!
//! Every call goes through [`Api::send`]: a 503 or 429 is tried again up to
//! [`MAX_TRIES`] times in all, after the `Retry-After` the gateway sends (both mean
//! "nothing was done, come back"), and any other error body becomes
//! [`ApiError::Api`] carrying the gateway's `error.code` and `error.message`. The
//! tenant's own limits (429 `rate_limited` and `tenant_quota_exceeded`) are pacing, not
//! an outage: the client waits them out, as long as [`MAX_PACING`] in all per request.

mod error;
mod model;

pub use error::ApiError;
pub use model::{Downloaded, ErrorBody, Job, OutputMeta, Page, ResultMeta, State, error_body};

use std::{path::Path, sync::Arc, time::Duration};

use futures_util::TryStreamExt;
use reqwest::{RequestBuilder, Response, StatusCode, header::HeaderMap};

use error::{error_of, root_cause, transport};

/// Tries of one request when the gateway answers 503 or 429.
pub const MAX_TRIES: u32 = 3;
/// The longest a request waits in all on the tenant's own limits (its rate and its jobs
/// in flight), which clear as its earlier jobs finish.
pub const MAX_PACING: Duration = Duration::from_secs(600);
/// The 429 codes that mean "your tenant is over its limit", not "the gateway is busy".
const PACING_CODES: [&str; 2] = ["rate_limited", "tenant_quota_exceeded"];
/// The longest `Retry-After` honoured; a larger one is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// The longest long-poll the gateway grants (`?wait=`); a longer wait is asked for in
/// several requests. The contract test checks it against the gateway's own limit.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// Told about each retry (a human line), so a progress bar or stderr can show it.
pub type Notice = Arc<dyn Fn(&str) + Send + Sync>;

/// The gateway's API. Cheap to clone: the connection pool is shared.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
    notice: Notice,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").field("base", &self.base).finish()
    }
}

impl Api {
    /// A client for the gateway at `base` (e.g. `http://127.0.0.1:8080`), sending `key`
    /// (when given) as `Authorization: Bearer` on every request.
    pub fn new(base: &str, key: Option<&str>) -> Result<Self, ApiError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = key {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| ApiError::Protocol {
                    url: base.into(),
                    detail: "the API key (--key, PIXMILL_API_KEY) is not visible ASCII".into(),
                })?;
            // Kept out of debug output and HTTP/2 header compression tables.
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("pixmill-cli/", env!("CARGO_PKG_VERSION")))
            // A gateway that does not accept in 10 s is as good as down (exit 3).
            .connect_timeout(Duration::from_secs(10))
            // Longer than the longest long-poll, so only a stalled connection trips it.
            .read_timeout(MAX_WAIT + Duration::from_secs(30))
            // The gateway closes a connection idle for PIXMILL_HEADER_TIMEOUT_SECS (10 s
            // by default); dropping ours sooner never sends a request on one it closes.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ApiError::Protocol {
                url: base.into(),
                detail: root_cause(&e),
            })?;
        let notice: Notice = Arc::new(|line: &str| eprintln!("{line}"));
        Ok(Self {
            base: base.trim_end_matches('/').into(),
            http,
            notice,
        })
    }

    /// The same client, telling `notice` instead of stderr about retries.
    pub fn with_notice(&self, notice: Notice) -> Self {
        Self {
            notice,
            ..self.clone()
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends the request `build` makes (again for each try), retrying 503 and 429.
    /// `build` is called afresh each time because a streamed upload cannot be replayed.
    /// A success, or a status in `accept`, is handed back; any other status is an error.
    async fn send(
        &self,
        url: &str,
        accept: &[StatusCode],
        mut build: impl AsyncFnMut() -> Result<RequestBuilder, ApiError>,
    ) -> Result<Response, ApiError> {
        let mut tries = 0;
        let mut paced = Duration::ZERO;
        loop {
            tries += 1;
            let response = build()
                .await?
                .send()
                .await
                .map_err(|e| transport(url, &e))?;
            let status = response.status();
            if status.is_success() || accept.contains(&status) {
                return Ok(response);
            }
            let busy = matches!(
                status,
                StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
            );
            let delay = retry_after(response.headers());
            let error = error_of(url, response).await;
            if busy && PACING_CODES.contains(&error.code()) && paced < MAX_PACING {
                // Not a try: the tenant's jobs finish and its bucket refills.
                paced += delay.max(Duration::from_millis(100));
                tries -= 1;
                (self.notice)(&format!(
                    "tenant limit reached ({error}), waiting {delay:.0?}"
                ));
                tokio::time::sleep(delay.max(Duration::from_millis(100))).await;
                continue;
            }
            if !busy || tries >= MAX_TRIES {
                return Err(error);
            }
            (self.notice)(&format!(
                "gateway busy ({}), try {}/{MAX_TRIES} in {:.0?}",
                error,
                tries + 1,
                delay
            ));
            tokio::time::sleep(delay).await;
        }
    }

    /// `POST /v1/jobs`: streams `path` as the `image` part with `fields` beside it.
    /// `progress` hears the bytes of the image handed to the connection so far.
    pub async fn submit(
        &self,
        path: &Path,
        fields: &[(String, String)],
        idempotency_key: &str,
        progress: Arc<dyn Fn(u64) + Send + Sync>,
    ) -> Result<Job, ApiError> {
        let url = self.url("/v1/jobs");
        let name = path
            .file_name()
            .map_or_else(|| "upload".into(), |n| n.to_string_lossy().into_owned());
        let response = self
            .send(&url, &[], async || {
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| ApiError::local(path, e))?;
                let len = file
                    .metadata()
                    .await
                    .map_err(|e| ApiError::local(path, e))?
                    .len();
                progress(0);
                let progress = progress.clone();
                let mut sent = 0u64;
                let stream = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024)
                    .inspect_ok(move |chunk| {
                        sent += chunk.len() as u64;
                        progress(sent);
                    });
                let image = reqwest::multipart::Part::stream_with_length(
                    reqwest::Body::wrap_stream(stream),
                    len,
                )
                .file_name(name.clone());
                let mut form = reqwest::multipart::Form::new();
                for (k, v) in fields {
                    form = form.text(k.clone(), v.clone());
                }
                Ok(self
                    .http
                    .post(&url)
                    .header("idempotency-key", idempotency_key)
                    .multipart(form.part("image", image)))
            })
            .await?;
        json_of(&url, response).await
    }

    /// `GET /v1/jobs/{id}`, long-polling up to `wait`. An expired job's 410 carries its
    /// record, which is returned like any other (state `expired`).
    pub async fn status(&self, id: &str, wait: Duration) -> Result<Job, ApiError> {
        let wait = wait.min(MAX_WAIT);
        let url = self.url(&format!("/v1/jobs/{}?wait={}", escape(id), wait.as_secs()));
        let response = self
            .send(&url, &[StatusCode::GONE], async || Ok(self.http.get(&url)))
            .await?;
        json_of(&url, response).await
    }

    /// Long-polls until the job is terminal, telling `on_state` each state seen.
    ///
    /// The gateway's long-poll answers early only when the job *ends*, so a job that
    /// goes from queued to running is not announced. While the job is queued the wait
    /// therefore starts short and doubles (2, 4, 8, 16 s, then [`MAX_WAIT`]), so a progress
    /// bar shows "running" soon after a worker takes the job; once it runs, each poll
    /// waits [`MAX_WAIT`]. A state this client does not know is waited on like `running`.
    pub async fn wait(&self, id: &str, on_state: &dyn Fn(&Job)) -> Result<Job, ApiError> {
        let mut wait = Duration::from_secs(2);
        loop {
            let started = tokio::time::Instant::now();
            let job = self.status(id, wait).await?;
            on_state(&job);
            if job.is_terminal() {
                return Ok(job);
            }
            wait = if job.state == State::Queued {
                (wait * 2).min(MAX_WAIT)
            } else {
                MAX_WAIT
            };
            // A gateway that answers at once (no long-poll) must not be polled in a loop.
            tokio::time::sleep_until(started + Duration::from_secs(1)).await;
        }
    }

    /// `GET /v1/jobs/{id}/result`, following a redirect to a presigned URL, streamed
    /// into the file `dest` names for the result's content type. The bytes go to a
    /// `.part` file first, so an interrupted download never leaves a truncated image.
    pub async fn download(
        &self,
        id: &str,
        dest: impl FnOnce(&str) -> std::path::PathBuf,
    ) -> Result<Downloaded, ApiError> {
        let url = self.url(&format!("/v1/jobs/{}/result", escape(id)));
        self.download_from(url, dest).await
    }

    /// `GET /v1/jobs/{id}/result/{name}`: one output of a job with variants, written as
    /// [`Api::download`] writes the result.
    pub async fn download_output(
        &self,
        id: &str,
        name: &str,
        dest: impl FnOnce(&str) -> std::path::PathBuf,
    ) -> Result<Downloaded, ApiError> {
        let url = self.url(&format!("/v1/jobs/{}/result/{}", escape(id), escape(name)));
        self.download_from(url, dest).await
    }

    async fn download_from(
        &self,
        url: String,
        dest: impl FnOnce(&str) -> std::path::PathBuf,
    ) -> Result<Downloaded, ApiError> {
        let mut response = self
            .send(&url, &[], async || Ok(self.http.get(&url)))
            .await?;
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_string();
        let path = dest(&content_type);
        let mut part_name = path.file_name().unwrap_or_default().to_os_string();
        part_name.push(".part");
        let part = path.with_file_name(part_name);
        let written = async {
            use tokio::io::AsyncWriteExt;
            let mut file = tokio::fs::File::create(&part)
                .await
                .map_err(|e| ApiError::local(&part, e))?;
            let mut bytes = 0u64;
            while let Some(chunk) = response.chunk().await.map_err(|e| transport(&url, &e))? {
                bytes += chunk.len() as u64;
                file.write_all(&chunk)
                    .await
                    .map_err(|e| ApiError::local(&part, e))?;
            }
            file.sync_all()
                .await
                .map_err(|e| ApiError::local(&part, e))?;
            tokio::fs::rename(&part, &path)
                .await
                .map_err(|e| ApiError::local(&path, e))?;
            Ok(bytes)
        }
        .await;
        match written {
            Ok(bytes) => Ok(Downloaded {
                path,
                bytes,
                content_type,
            }),
            Err(e) => {
                let _ = tokio::fs::remove_file(&part).await;
                Err(e)
            }
        }
    }

    /// `DELETE /v1/jobs/{id}`: cancels a queued job, or removes a finished job's files.
    pub async fn cancel(&self, id: &str) -> Result<Job, ApiError> {
        let url = self.url(&format!("/v1/jobs/{}", escape(id)));
        let response = self
            .send(&url, &[], async || Ok(self.http.delete(&url)))
            .await?;
        json_of(&url, response).await
    }

    /// `GET /v1/jobs?state=…&limit=…&cursor=…`: one page, newest first.
    pub async fn list(
        &self,
        state: Option<&State>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page, ApiError> {
        let mut url = self.url(&format!("/v1/jobs?limit={limit}"));
        if let Some(state) = state {
            url.push_str(&format!("&state={}", escape(state.as_str())));
        }
        if let Some(cursor) = cursor {
            url.push_str(&format!("&cursor={}", escape(cursor)));
        }
        let response = self
            .send(&url, &[], async || Ok(self.http.get(&url)))
            .await?;
        json_of(&url, response).await
    }
}

/// Percent-encodes everything but unreserved characters, so an id or cursor cannot
/// change the path or add parameters.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `Retry-After` in seconds (the gateway's form), capped; 1 s when absent or a date.
fn retry_after(headers: &HeaderMap) -> Duration {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs)
        .min(MAX_RETRY_AFTER)
}

async fn json_of<T: serde::de::DeserializeOwned>(
    url: &str,
    response: Response,
) -> Result<T, ApiError> {
    let bytes = response.bytes().await.map_err(|e| transport(url, &e))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::Protocol {
        url: url.into(),
        detail: format!("the body is not the expected JSON: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderValue, RETRY_AFTER};

    #[test]
    fn retry_after_is_read_and_capped() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), Duration::from_secs(1));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Duration::from_secs(2));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("0"));
        assert_eq!(retry_after(&headers), Duration::ZERO);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("86400"));
        assert_eq!(retry_after(&headers), MAX_RETRY_AFTER);
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), Duration::from_secs(1));
    }

    #[test]
    fn ids_cannot_escape_the_path() {
        assert_eq!(escape("4f40a890-1f5d"), "4f40a890-1f5d");
        assert_eq!(escape("../x?y=1&z"), "..%2Fx%3Fy%3D1%26z");
    }
}
