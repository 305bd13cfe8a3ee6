//! Bad input: each request gets a clear JSON 4xx naming the problem, and the system is
//! still healthy afterwards.

use pixmill_tests::{Stack, photos::photo};

/// A tiny PNG whose header claims `w`×`h`.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    // A tiny deflate stream: a bomb need not carry its pixels.
    chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

#[tokio::test]
async fn every_bad_request_gets_a_clear_error_and_the_system_stays_healthy() {
    let mut stack = Stack::start().await.expect("start");
    stack.add_worker("bad-input-worker", 1);
    let client = &stack.client;
    let jpeg = photo("china.jpg");
    let truncated = jpeg[..jpeg.len() / 2].to_vec();
    let bomb = png_claiming(100_000, 100_000);
    let huge = vec![0u8; 30 * 1024 * 1024];

    // (what, request, status, code, a phrase the message must contain)
    let cases: Vec<(&str, pixmill_tests::Reply, u16, &str, &str)> = vec![
        (
            "a text file",
            client
                .submit(b"just some notes\n", &[("op", "grayscale")])
                .await
                .expect("send"),
            415,
            "unsupported_media_type",
            "not an image",
        ),
        (
            "a truncated JPEG",
            client
                .submit(&truncated, &[("op", "grayscale")])
                .await
                .expect("send"),
            422,
            "truncated_image",
            "truncated",
        ),
        (
            "a PNG header claiming 100000×100000",
            client
                .submit(&bomb, &[("op", "grayscale")])
                .await
                .expect("send"),
            422,
            "too_many_pixels",
            "PIXMILL_MAX_PIXELS",
        ),
        (
            "an unknown op",
            client
                .submit(&jpeg, &[("op", "sharpen")])
                .await
                .expect("send"),
            422,
            "unknown_op",
            "expected one of resize",
        ),
        (
            "width=0",
            client
                .submit(&jpeg, &[("op", "resize"), ("width", "0")])
                .await
                .expect("send"),
            422,
            "invalid_parameter",
            "width must be between 1 and 10000",
        ),
        (
            "width=100000",
            client
                .submit(&jpeg, &[("op", "resize"), ("width", "100000")])
                .await
                .expect("send"),
            422,
            "invalid_parameter",
            "width must be between 1 and 10000",
        ),
        (
            "sigma=-1",
            client
                .submit(&jpeg, &[("op", "blur"), ("sigma", "-1")])
                .await
                .expect("send"),
            422,
            "invalid_parameter",
            "sigma must be between 0.1 and 50",
        ),
        (
            "a 30 MiB upload",
            client
                .submit(&huge, &[("op", "grayscale")])
                .await
                .expect("send"),
            413,
            "upload_too_large",
            "PIXMILL_MAX_UPLOAD_BYTES",
        ),
        (
            "an empty body",
            client
                .submit_raw(Vec::new(), "op=grayscale")
                .await
                .expect("send"),
            400,
            "missing_image",
            "body is empty",
        ),
        (
            "malformed steps JSON",
            client
                .submit(&jpeg, &[("steps", r#"[{"op": "blur", "sigma": "#)])
                .await
                .expect("send"),
            422,
            "invalid_parameter",
            "steps is not valid JSON",
        ),
        (
            "a non-UUID id",
            client.get("/v1/jobs/not-a-uuid").await.expect("send"),
            404,
            "not_found",
            "not-a-uuid",
        ),
        (
            "a non-UUID id for a result",
            client
                .get("/v1/jobs/1%2F..%2F..%2Fetc%2Fpasswd/result")
                .await
                .expect("send"),
            404,
            "not_found",
            "no job with id",
        ),
        (
            "an unknown job",
            client
                .get("/v1/jobs/00000000-0000-4000-8000-000000000000")
                .await
                .expect("send"),
            404,
            "not_found",
            "no job with id",
        ),
        (
            "a crop outside the image",
            client
                .submit(
                    &jpeg,
                    &[
                        ("op", "crop"),
                        ("x", "600"),
                        ("y", "0"),
                        ("width", "100"),
                        ("height", "10"),
                    ],
                )
                .await
                .expect("send"),
            422,
            "invalid_parameter",
            "outside the 640×427 image",
        ),
        (
            "21 steps",
            client
                .submit(
                    &jpeg,
                    &[(
                        "steps",
                        &format!("[{}]", vec![r#"{"op":"grayscale"}"#; 21].join(",")),
                    )],
                )
                .await
                .expect("send"),
            422,
            "too_many_steps",
            "PIXMILL_MAX_STEPS",
        ),
        (
            "a missing image field",
            client
                .submit_raw(b"op=resize".to_vec(), "")
                .await
                .expect("send"),
            422,
            "invalid_parameter",
            "missing `op`",
        ),
    ];
    for (what, reply, status, code, phrase) in cases {
        assert_eq!(
            reply.status,
            status,
            "{what}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        assert_eq!(reply.headers["content-type"], "application/json", "{what}");
        assert_eq!(reply.error_code(), code, "{what}");
        let message = reply.error_message();
        assert!(
            message.contains(phrase),
            "{what}: {message:?} lacks {phrase:?}"
        );
    }

    // Still healthy: probes answer and a good job goes through.
    assert_eq!(client.get("/healthz").await.expect("healthz").status, 200);
    assert_eq!(client.get("/readyz").await.expect("readyz").status, 200);
    let id = client
        .submit_ok(&jpeg, &[("op", "resize"), ("width", "64")])
        .await
        .expect("good job");
    let (_, result) = client.result_of(&id).await.expect("result");
    assert!(!result.body.is_empty());
    stack.stop().await.expect("stop");
}
