//! The bad-input catalogue (docs/api.md, "Bad input"): every hostile or malformed request gets
//! a clear JSON answer naming the problem, and the system stays healthy afterwards.

use std::{io::Cursor, time::Duration};

use image::{DynamicImage, ImageFormat, RgbImage, RgbaImage};
use pixmill_tests::{
    Reply, Stack,
    photos::{decode, photo, png},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// A tiny PNG whose header claims `w`×`h`: a decompression bomb's calling card.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
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

/// A real JPEG whose frame header is rewritten to claim `w`×`h`.
fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
    let mut bytes = photo("china.jpg");
    let sof = bytes
        .windows(2)
        .position(|m| m[0] == 0xFF && matches!(m[1], 0xC0..=0xC2))
        .expect("a JPEG has a frame header");
    bytes[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    bytes
}

fn encoded(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

/// A lossless WebP whose header is rewritten to claim 16384×16384.
fn webp_bomb() -> Vec<u8> {
    let mut bytes = encoded(
        &DynamicImage::ImageRgb8(RgbImage::new(8, 8)),
        ImageFormat::WebP,
    );
    let vp8l = bytes
        .windows(4)
        .position(|w| w == b"VP8L")
        .expect("lossless WebP");
    // 14 bits width-1, 14 bits height-1, 1 bit alpha, 3 bits version, after the 0x2f signature.
    let bits: u32 = 16383 | (16383 << 14);
    bytes[vp8l + 9..vp8l + 13].copy_from_slice(&bits.to_le_bytes());
    bytes
}

/// A GIF whose logical screen claims 65535×65535.
fn gif_bomb() -> Vec<u8> {
    let mut bytes = encoded(
        &DynamicImage::ImageRgba8(RgbaImage::new(4, 4)),
        ImageFormat::Gif,
    );
    bytes[6..10].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
    bytes
}

/// A GIF with `n` frames.
fn gif_frames(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut out);
        let frames = (0..n).map(|i| {
            let shade = (i % 256) as u8;
            image::Frame::new(RgbaImage::from_pixel(
                4,
                4,
                image::Rgba([shade, 0, 255 - shade, 255]),
            ))
        });
        encoder.encode_frames(frames).expect("gif");
    }
    out
}

/// A multipart body whose declared boundary never appears.
async fn malformed_multipart(stack: &Stack) -> Reply {
    stack
        .client
        .post(
            "",
            &[("content-type", "multipart/form-data; boundary=XYZ")],
            b"--ABC\r\ncontent-disposition: form-data; name=\"image\"\r\n\r\nnot really\r\n"
                .to_vec(),
        )
        .await
        .expect("send")
}

/// One catalogue row: what was sent, and what must come back.
struct Row {
    what: &'static str,
    reply: Reply,
    status: u16,
    code: &'static str,
    phrase: &'static str,
}

#[tokio::test]
async fn the_bad_input_catalogue() {
    let mut stack = Stack::start().await.expect("start");
    stack.add_worker("catalogue-worker", 1);
    let c = &stack.client;
    let jpeg = photo("china.jpg");
    let png_photo = png(&decode(&jpeg));
    let webp_photo = encoded(&decode(&jpeg), ImageFormat::WebP);
    let cut = |b: &[u8]| b[..b.len() / 2].to_vec();
    let steps_1000 = format!("[{}]", vec![r#"{"op":"grayscale"}"#; 1000].join(","));
    let send = |reply: anyhow::Result<Reply>| reply.expect("request sent");

    let rows = vec![
        Row {
            what: "a text file",
            reply: send(c.submit(b"just some notes\n", &[("op", "grayscale")]).await),
            status: 415,
            code: "unsupported_media_type",
            phrase: "not an image",
        },
        Row {
            what: "a PDF",
            reply: send(
                c.submit(
                    b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n",
                    &[("op", "grayscale")],
                )
                .await,
            ),
            status: 415,
            code: "unsupported_media_type",
            phrase: "JPEG, PNG, WebP or GIF",
        },
        Row {
            what: "a truncated JPEG",
            reply: send(c.submit(&cut(&jpeg), &[("op", "grayscale")]).await),
            status: 422,
            code: "truncated_image",
            phrase: "truncated",
        },
        Row {
            what: "a truncated PNG",
            reply: send(c.submit(&cut(&png_photo), &[("op", "grayscale")]).await),
            status: 422,
            code: "truncated_image",
            phrase: "no IEND chunk",
        },
        Row {
            what: "a truncated WebP",
            reply: send(c.submit(&cut(&webp_photo), &[("op", "grayscale")]).await),
            status: 422,
            code: "truncated_image",
            phrase: "RIFF",
        },
        Row {
            what: "a 370 KB progressive JPEG with 20000 scans",
            reply: send(
                c.submit(
                    &pixmill_tests::hostile::progressive_jpeg_with_scans(2048, 20_000),
                    &[("op", "grayscale")],
                )
                .await,
            ),
            status: 422,
            code: "too_many_scans",
            phrase: "the JPEG has 20000 scans; the limit is 100 scans (PIXMILL_MAX_SCANS)",
        },
        Row {
            what: "a GIF whose first frame claims 60000×60000 in a 16×16 screen",
            reply: send(
                c.submit(
                    &pixmill_tests::hostile::gif_with_oversized_frame(60_000),
                    &[("op", "grayscale")],
                )
                .await,
            ),
            status: 422,
            code: "too_many_pixels",
            phrase: "the first frame: the image is 60000×60000",
        },
        Row {
            what: "PNG bomb: header claims 100000×100000",
            reply: send(
                c.submit(&png_claiming(100_000, 100_000), &[("op", "grayscale")])
                    .await,
            ),
            status: 422,
            code: "too_many_pixels",
            phrase: "PIXMILL_MAX_PIXELS",
        },
        Row {
            what: "JPEG bomb: frame header claims 65000×65000",
            reply: send(
                c.submit(&jpeg_claiming(65_000, 65_000), &[("op", "grayscale")])
                    .await,
            ),
            status: 422,
            code: "too_many_pixels",
            phrase: "PIXMILL_MAX_PIXELS",
        },
        Row {
            what: "WebP bomb: header claims 16384×16384",
            reply: send(c.submit(&webp_bomb(), &[("op", "grayscale")]).await),
            status: 422,
            code: "too_many_pixels",
            phrase: "PIXMILL_MAX_PIXELS",
        },
        Row {
            what: "GIF bomb: screen claims 65535×65535",
            reply: send(c.submit(&gif_bomb(), &[("op", "grayscale")]).await),
            status: 422,
            code: "too_many_pixels",
            phrase: "PIXMILL_MAX_PIXELS",
        },
        Row {
            what: "a 30 MiB upload",
            reply: send(
                c.submit(&vec![0u8; 30 * 1024 * 1024], &[("op", "grayscale")])
                    .await,
            ),
            status: 413,
            code: "upload_too_large",
            phrase: "PIXMILL_MAX_UPLOAD_BYTES",
        },
        Row {
            what: "a 30 MiB raw body without Content-Length",
            reply: send(
                c.post(
                    "op=grayscale",
                    &[("transfer-encoding", "chunked")],
                    vec![0u8; 30 * 1024 * 1024],
                )
                .await,
            ),
            status: 413,
            code: "upload_too_large",
            phrase: "26214400-byte limit",
        },
        Row {
            what: "an empty body",
            reply: send(c.submit_raw(Vec::new(), "op=grayscale").await),
            status: 400,
            code: "missing_image",
            phrase: "body is empty",
        },
        Row {
            what: "an empty image field",
            reply: send(c.submit(b"", &[("op", "grayscale")]).await),
            status: 400,
            code: "empty_image",
            phrase: "empty",
        },
        Row {
            what: "malformed multipart",
            reply: malformed_multipart(&stack).await,
            status: 400,
            code: "malformed_multipart",
            phrase: "multipart",
        },
        Row {
            what: "an unknown op",
            reply: send(c.submit(&jpeg, &[("op", "sharpen")]).await),
            status: 422,
            code: "unknown_op",
            phrase: "expected one of resize",
        },
        Row {
            what: "no op and no steps",
            reply: send(c.submit(&jpeg, &[]).await),
            status: 422,
            code: "invalid_parameter",
            phrase: "missing `op`",
        },
        Row {
            what: "both op and steps",
            reply: send(
                c.submit(&jpeg, &[("op", "grayscale"), ("steps", "[]")])
                    .await,
            ),
            status: 422,
            code: "invalid_parameter",
            phrase: "not both",
        },
        Row {
            what: "an unknown parameter",
            reply: send(c.submit(&jpeg, &[("op", "blur"), ("sigmaa", "2")]).await),
            status: 422,
            code: "invalid_parameter",
            phrase: "sigmaa",
        },
        Row {
            what: "width=0",
            reply: send(c.submit(&jpeg, &[("op", "resize"), ("width", "0")]).await),
            status: 422,
            code: "invalid_parameter",
            phrase: "width must be between 1 and 10000",
        },
        Row {
            what: "width=100000",
            reply: send(
                c.submit(&jpeg, &[("op", "resize"), ("width", "100000")])
                    .await,
            ),
            status: 422,
            code: "invalid_parameter",
            phrase: "width must be between 1 and 10000",
        },
        Row {
            what: "width=-5",
            reply: send(c.submit(&jpeg, &[("op", "resize"), ("width", "-5")]).await),
            status: 422,
            code: "invalid_parameter",
            phrase: "resize",
        },
        Row {
            what: "width=99999999999999999999",
            reply: send(
                c.submit(
                    &jpeg,
                    &[("op", "resize"), ("width", "99999999999999999999")],
                )
                .await,
            ),
            status: 422,
            code: "invalid_parameter",
            phrase: "resize",
        },
        Row {
            what: "sigma=-1",
            reply: send(c.submit(&jpeg, &[("op", "blur"), ("sigma", "-1")]).await),
            status: 422,
            code: "invalid_parameter",
            phrase: "sigma must be between 0.1 and 50",
        },
        Row {
            what: "sigma=NaN",
            reply: send(c.submit(&jpeg, &[("op", "blur"), ("sigma", "NaN")]).await),
            status: 422,
            code: "invalid_parameter",
            phrase: "blur",
        },
        Row {
            what: "sigma=1e300",
            reply: send(c.submit(&jpeg, &[("op", "blur"), ("sigma", "1e300")]).await),
            status: 422,
            code: "invalid_parameter",
            phrase: "sigma must be between 0.1 and 50",
        },
        Row {
            what: "rotate by 45 degrees",
            reply: send(
                c.submit(&jpeg, &[("op", "rotate"), ("degrees", "45")])
                    .await,
            ),
            status: 422,
            code: "invalid_parameter",
            phrase: "degrees must be 90, 180 or 270",
        },
        Row {
            what: "edges with low > high",
            reply: send(
                c.submit(&jpeg, &[("op", "edges"), ("low", "300"), ("high", "200")])
                    .await,
            ),
            status: 422,
            code: "invalid_parameter",
            phrase: "must not exceed high",
        },
        Row {
            what: "a crop outside the image",
            reply: send(
                c.submit(
                    &jpeg,
                    &[
                        ("op", "crop"),
                        ("x", "600"),
                        ("y", "0"),
                        ("width", "100"),
                        ("height", "10"),
                    ],
                )
                .await,
            ),
            status: 422,
            code: "invalid_parameter",
            phrase: "outside the 640×427 image",
        },
        Row {
            what: "a resize whose result exceeds the pixel limit",
            reply: send(
                c.submit(
                    &jpeg,
                    &[(
                        "steps",
                        r#"[{"op":"resize","width":10000,"height":10000,"fit":"fill"}]"#,
                    )],
                )
                .await,
            ),
            status: 422,
            code: "too_many_pixels",
            phrase: "PIXMILL_MAX_PIXELS",
        },
        Row {
            what: "a 1000-step pipeline",
            reply: send(c.submit(&jpeg, &[("steps", &steps_1000)]).await),
            status: 422,
            code: "too_many_steps",
            phrase: "PIXMILL_MAX_STEPS",
        },
        Row {
            what: "malformed steps JSON",
            reply: send(
                c.submit(&jpeg, &[("steps", r#"[{"op": "blur", "sigma": "#)])
                    .await,
            ),
            status: 422,
            code: "invalid_parameter",
            phrase: "steps is not valid JSON",
        },
        Row {
            what: "steps that is not an array",
            reply: send(
                c.submit(&jpeg, &[("steps", r#"{"op":"blur","sigma":1}"#)])
                    .await,
            ),
            status: 422,
            code: "invalid_parameter",
            phrase: "JSON array",
        },
        Row {
            what: "an unknown output format",
            reply: send(
                c.submit(&jpeg, &[("op", "grayscale"), ("format", "bmp")])
                    .await,
            ),
            status: 422,
            code: "invalid_parameter",
            phrase: "format must be one of jpeg, png, webp",
        },
        Row {
            what: "quality=0",
            reply: send(
                c.submit(&jpeg, &[("op", "grayscale"), ("quality", "0")])
                    .await,
            ),
            status: 422,
            code: "invalid_parameter",
            phrase: "quality must be an integer between 1 and 100",
        },
        Row {
            what: "a non-UUID id",
            reply: send(c.get("/v1/jobs/not-a-uuid").await),
            status: 404,
            code: "not_found",
            phrase: "not-a-uuid",
        },
        Row {
            what: "a path trick in the id",
            reply: send(c.get("/v1/jobs/..%2F..%2Fetc%2Fpasswd/result").await),
            status: 404,
            code: "not_found",
            phrase: "no job with id",
        },
        Row {
            what: "a NUL byte in the id",
            reply: send(c.get("/v1/jobs/%00").await),
            status: 404,
            code: "not_found",
            phrase: "no job with id",
        },
        Row {
            what: "an unknown job",
            reply: send(c.get("/v1/jobs/00000000-0000-4000-8000-000000000000").await),
            status: 404,
            code: "not_found",
            phrase: "no job with id",
        },
        Row {
            what: "wait=abc",
            reply: send(
                c.get("/v1/jobs/00000000-0000-4000-8000-000000000000?wait=abc")
                    .await,
            ),
            status: 422,
            code: "invalid_parameter",
            phrase: "wait must be a number of seconds",
        },
        Row {
            what: "an unknown path",
            reply: send(c.get("/v1/nothing-here").await),
            status: 404,
            code: "not_found",
            phrase: "/v1/nothing-here",
        },
        Row {
            what: "an invalid Idempotency-Key",
            reply: send(
                c.submit_with_headers(&jpeg, &[("op", "grayscale")], &[("idempotency-key", "")])
                    .await,
            ),
            status: 400,
            code: "invalid_idempotency_key",
            phrase: "Idempotency-Key",
        },
    ];
    let count = rows.len();
    for row in rows {
        let Row {
            what,
            reply,
            status,
            code,
            phrase,
        } = row;
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
    assert!(count >= 25, "the catalogue has {count} rows");

    // Still healthy: probes answer and a good job goes through.
    assert_eq!(c.get("/healthz").await.expect("healthz").status, 200);
    assert_eq!(c.get("/readyz").await.expect("readyz").status, 200);
    let id = c
        .submit_ok(&jpeg, &[("op", "resize"), ("width", "64")])
        .await
        .expect("good job");
    let (_, result) = c.result_of(&id).await.expect("result");
    assert!(!result.body.is_empty());
    stack.stop().await.expect("stop");
}

/// A job that never passed a gateway meets the same scan limit in the worker, before
/// any decoding: without it, this file holds a worker for about 30 s.
#[test]
fn the_worker_counts_scans_again() {
    let job = pixmill_shared::JobRequest {
        id: uuid::Uuid::new_v4(),
        input: "inputs/x".into(),
        steps: vec![pixmill_shared::Step::Grayscale {}.into()],
        format: pixmill_shared::OutputFormat::Png,
        quality: 85,
        cursor: 0,
        hops: Vec::new(),
        variants: Vec::new(),
    };
    let bytes = pixmill_tests::hostile::progressive_jpeg_with_scans(2048, 20_000);
    let err = pixmill_workers::pipeline::process(&job, &bytes, &pixmill_shared::Limits::default())
        .expect_err("refused");
    assert_eq!(err.code(), Some(pixmill_shared::ErrorCode::TooManyScans));
    assert!(err.to_string().contains("PIXMILL_MAX_SCANS"), "{err}");
    // And a progressive photo, with its ordinary ten scans, still decodes.
    let fine = pixmill_tests::photos::photo("FreshFlower.jpg");
    pixmill_workers::pipeline::process(&job, &fine, &pixmill_shared::Limits::default())
        .expect("a progressive photo");
}

/// Accepted on purpose: the bytes decide the format, and GIFs use their first frame.
#[tokio::test]
async fn odd_but_valid_uploads_are_accepted() {
    let mut stack = Stack::start().await.expect("start");
    stack.add_worker("odd-worker", 1);
    let c = &stack.client;

    // A PNG sent as "photo.jpg" with Content-Type image/jpeg is still a PNG.
    let png_bytes = png(&decode(&photo("flower.jpg")));
    let reply = c
        .post("op=grayscale", &[("content-type", "image/jpeg")], png_bytes)
        .await
        .expect("send");
    assert_eq!(
        reply.status,
        202,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json()["format"], "png");
    let (_, result) = c
        .result_of(reply.json()["id"].as_str().expect("id"))
        .await
        .expect("result");
    assert_eq!(result.headers["content-type"], "image/png");

    // A GIF with 3000 frames: only the first is decoded, so it is cheap and accepted.
    let id = c
        .submit_ok(&gif_frames(3000), &[("op", "swap")])
        .await
        .expect("gif");
    let (job, result) = c.result_of(&id).await.expect("result");
    assert_eq!(job["result"]["width"], 4);
    let first = decode(&result.body).to_rgba8();
    assert_eq!(
        first.get_pixel(0, 0).0,
        [255, 0, 0, 255],
        "frame 0 (blue) swapped to red"
    );

    // A 1 MB PNG whose ICC profile inflates to 1 GiB: neither the gateway (which reads
    // the size from IHDR) nor the worker (which drops compressed metadata unread)
    // inflates it, and the job runs as any 64×64 PNG would.
    let bomb = pixmill_tests::hostile::png_with_inflating_icc(1024);
    assert!(bomb.len() < 1_200_000, "{} bytes", bomb.len());
    let id = c
        .submit_ok(&bomb, &[("op", "grayscale")])
        .await
        .expect("png with an inflating profile");
    let (job, _) = c.result_of(&id).await.expect("result");
    assert_eq!(
        (
            job["result"]["width"].as_u64(),
            job["result"]["height"].as_u64()
        ),
        (Some(64), Some(64))
    );
    stack.stop().await.expect("stop");
}

/// An upload that stops sending is cut off by the request timeout, and its connection
/// and memory are freed; the gateway keeps serving others meanwhile.
#[tokio::test]
async fn a_slow_loris_upload_times_out() {
    let stack = Stack::start_configured(
        pixmill_tests::common(
            &format!("test-{}", uuid::Uuid::new_v4().simple()),
            &pixmill_tests::temp_dir(),
        ),
        |s| s.request_timeout = Duration::from_secs(2),
    )
    .await
    .expect("start");
    let address = stack.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/jobs?op=grayscale HTTP/1.1\r\nhost: {address}\r\ncontent-type: image/jpeg\r\ncontent-length: 1000000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("send head");
    stream
        .write_all(&photo("china.jpg")[..1000])
        .await
        .expect("send a little");
    // ... and then nothing more. Others are still served meanwhile:
    assert_eq!(
        stack.client.get("/healthz").await.expect("healthz").status,
        200
    );
    let mut answer = Vec::new();
    let read = tokio::time::timeout(pixmill_tests::TIMEOUT, stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the stalled upload was never cut off");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.contains(r#""code":"request_timeout""#)
            && text.contains("PIXMILL_REQUEST_TIMEOUT_SECS"),
        "the 408 names the limit, as JSON: {text}"
    );
    drop(stack);
}

/// The same Idempotency-Key and request give the same job; a different request under
/// that key is refused.
#[tokio::test]
async fn idempotency_keys_return_the_same_job() {
    let mut stack = Stack::start().await.expect("start");
    stack.add_worker("idem-worker", 1);
    let c = &stack.client;
    let jpeg = photo("china.jpg");
    let key = [("idempotency-key", "order-1234-thumbnail")];
    let first = c
        .submit_with_headers(&jpeg, &[("op", "grayscale")], &key)
        .await
        .expect("first");
    let again = c
        .submit_with_headers(&jpeg, &[("op", "grayscale")], &key)
        .await
        .expect("again");
    assert_eq!(first.status, 202);
    assert_eq!(again.status, 202);
    assert_eq!(first.json()["id"], again.json()["id"]);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    let other = c
        .submit_with_headers(&jpeg, &[("op", "swap")], &key)
        .await
        .expect("other");
    assert_eq!(other.status, 422);
    assert_eq!(other.error_code(), "idempotency_key_reused");
    c.result_of(first.json()["id"].as_str().expect("id"))
        .await
        .expect("result");
    stack.stop().await.expect("stop");
}
