//! Typed helpers over the REST API, as a client program would use it.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::TIMEOUT;

/// A response: status, headers and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (panics with the body text when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `error.code` of an error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The `error.message` of an error body.
    pub fn error_message(&self) -> String {
        self.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Typed helpers over the REST API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// The gateway's base URL, e.g. `http://127.0.0.1:41234`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A client for the gateway at `base`.
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').into(),
            http: reqwest::Client::builder()
                .timeout(TIMEOUT)
                // Under the gateway's idle timeout (PIXMILL_HEADER_TIMEOUT_SECS, 10 s), so
                // no request goes out on a connection the gateway is closing.
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
        }
    }

    /// The same gateway, with `authorization` as the `Authorization` header of every
    /// request (`Bearer pmk_…`, or anything malformed a test wants to send).
    pub fn with_authorization(&self, authorization: &str) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(value) = reqwest::header::HeaderValue::from_str(authorization) {
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        Self {
            base: self.base.clone(),
            http: reqwest::Client::builder()
                .timeout(TIMEOUT)
                .default_headers(headers)
                .build()
                .unwrap_or_default(),
        }
    }

    /// The same gateway, sending `key` as `Authorization: Bearer`.
    pub fn with_key(&self, key: &str) -> Self {
        self.with_authorization(&format!("Bearer {key}"))
    }

    /// `POST` a JSON body to any path.
    pub async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Reply> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await?;
        Self::collect(response).await
    }

    /// `PUT` a JSON body to any path.
    pub async fn put_json(&self, path: &str, body: &Value) -> anyhow::Result<Reply> {
        let response = self
            .http
            .put(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await?;
        Self::collect(response).await
    }

    async fn collect(response: reqwest::Response) -> anyhow::Result<Reply> {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await?.to_vec();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// `POST /v1/jobs` as multipart: the image plus plain fields.
    pub async fn submit(&self, image: &[u8], fields: &[(&str, &str)]) -> anyhow::Result<Reply> {
        let mut form = reqwest::multipart::Form::new().part(
            "image",
            reqwest::multipart::Part::bytes(image.to_vec()).file_name("upload"),
        );
        for (k, v) in fields {
            form = form.text(k.to_string(), v.to_string());
        }
        let response = self
            .http
            .post(format!("{}/v1/jobs", self.base))
            .multipart(form)
            .send()
            .await?;
        Self::collect(response).await
    }

    /// `POST /v1/jobs` with any body, headers and query string.
    pub async fn post(
        &self,
        query: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> anyhow::Result<Reply> {
        let mut request = self
            .http
            .post(format!("{}/v1/jobs?{query}", self.base))
            .body(body);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        Self::collect(request.send().await?).await
    }

    /// `POST /v1/jobs` as multipart with extra request headers.
    pub async fn submit_with_headers(
        &self,
        image: &[u8],
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Reply> {
        let mut form = reqwest::multipart::Form::new().part(
            "image",
            reqwest::multipart::Part::bytes(image.to_vec()).file_name("upload"),
        );
        for (k, v) in fields {
            form = form.text(k.to_string(), v.to_string());
        }
        let mut request = self
            .http
            .post(format!("{}/v1/jobs", self.base))
            .multipart(form);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        Self::collect(request.send().await?).await
    }

    /// `POST /v1/jobs` with a raw body and the parameters in the query string.
    pub async fn submit_raw(&self, body: Vec<u8>, query: &str) -> anyhow::Result<Reply> {
        let response = self
            .http
            .post(format!("{}/v1/jobs?{query}", self.base))
            .body(body)
            .send()
            .await?;
        Self::collect(response).await
    }

    /// `DELETE` any path.
    pub async fn delete(&self, path: &str) -> anyhow::Result<Reply> {
        let response = self
            .http
            .delete(format!("{}{path}", self.base))
            .send()
            .await?;
        Self::collect(response).await
    }

    /// `GET` any path.
    pub async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        let response = self.http.get(format!("{}{path}", self.base)).send().await?;
        Self::collect(response).await
    }

    /// Submits and returns the job id, failing unless the answer is 202.
    pub async fn submit_ok(&self, image: &[u8], fields: &[(&str, &str)]) -> anyhow::Result<String> {
        let reply = self.submit(image, fields).await?;
        if reply.status != 202 {
            bail!(
                "expected 202, got {}: {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            );
        }
        Ok(reply.json()["id"]
            .as_str()
            .context("202 without an id")?
            .to_string())
    }

    /// Long-polls until the job is terminal (bounded by [`TIMEOUT`]).
    pub async fn wait_terminal(&self, id: &str) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let job = self.get(&format!("/v1/jobs/{id}?wait=10")).await?.json();
            let state = job["state"].as_str().unwrap_or_default();
            if matches!(state, "succeeded" | "failed" | "cancelled") {
                return Ok(job);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("job {id} still {state} after {TIMEOUT:?}");
            }
        }
    }

    /// Waits for success and downloads the result.
    pub async fn result_of(&self, id: &str) -> anyhow::Result<(Value, Reply)> {
        let job = self.wait_terminal(id).await?;
        if job["state"] != "succeeded" {
            bail!("job {id} did not succeed: {job}");
        }
        let result = self.get(&format!("/v1/jobs/{id}/result")).await?;
        if result.status != 200 {
            bail!("result of {id}: status {}", result.status);
        }
        Ok((job, result))
    }
}
