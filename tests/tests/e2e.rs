//! The core loop, end to end: upload → RabbitMQ → workers → result, on real photographs.

use image::{DynamicImage, GenericImageView, Rgb};
use pixmill_tests::{
    Stack, TIMEOUT,
    photos::{decode, laplacian_variance, photo, png},
};

/// One stack with one in-process worker, for the op tests.
async fn stack() -> Stack {
    let mut stack = Stack::start().await.expect("start stack");
    stack.add_worker("e2e-worker", 2);
    stack
}

/// A real photograph as lossless PNG, so pixel checks are exact.
fn photo_png(name: &str) -> (DynamicImage, Vec<u8>) {
    let image = decode(&photo(name));
    let bytes = png(&image);
    (image, bytes)
}

#[tokio::test]
async fn resize_gives_an_exact_jpeg() {
    let stack = stack().await;
    let reply = stack
        .client
        .submit(
            &photo("FreshFlower.jpg"),
            &[("op", "resize"), ("width", "640"), ("height", "400")],
        )
        .await
        .expect("submit");
    assert_eq!(
        reply.status,
        202,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = reply.json();
    let id = body["id"].as_str().expect("id").to_string();
    assert_eq!(body["state"], "queued");
    assert_eq!(
        reply.headers["location"].to_str().expect("ascii"),
        format!("/v1/jobs/{id}")
    );

    let (job, result) = stack.client.result_of(&id).await.expect("result");
    assert_eq!(result.headers["content-type"], "image/jpeg");
    assert_eq!(
        result.headers["content-length"].to_str().expect("ascii"),
        result.body.len().to_string()
    );
    assert_eq!(
        image::guess_format(&result.body).expect("format"),
        image::ImageFormat::Jpeg
    );
    assert_eq!(decode(&result.body).dimensions(), (640, 400));
    assert_eq!(job["result"]["width"], 640);
    assert_eq!(job["result"]["height"], 400);
    assert_eq!(job["attempts"], 1);
    assert!(job["started_at"].is_string() && job["finished_at"].is_string());
    stack.stop().await.expect("stop");
}

#[tokio::test]
async fn swap_turns_pure_red_into_pure_blue() {
    let stack = stack().await;
    let mut image = decode(&photo("Dune.jpg")).to_rgb8();
    for y in 10..26 {
        for x in 10..26 {
            image.put_pixel(x, y, Rgb([255, 0, 0]));
        }
    }
    let input = DynamicImage::ImageRgb8(image.clone());
    let id = stack
        .client
        .submit_ok(&png(&input), &[("op", "swap"), ("format", "png")])
        .await
        .expect("submit");
    let (_, result) = stack.client.result_of(&id).await.expect("result");
    let out = decode(&result.body).to_rgb8();
    assert_eq!(out.get_pixel(17, 17).0, [0, 0, 255]);
    // Everywhere else, red and blue trade places exactly.
    for (x, y) in [(500, 300), (1000, 700), (1679, 1049)] {
        let [r, g, b] = image.get_pixel(x, y).0;
        assert_eq!(out.get_pixel(x, y).0, [b, g, r], "pixel ({x}, {y})");
    }
    stack.stop().await.expect("stop");
}

#[tokio::test]
async fn blur_lowers_the_variance_of_the_laplacian() {
    let stack = stack().await;
    let (input, bytes) = photo_png("china.jpg");
    let id = stack
        .client
        .submit_ok(&bytes, &[("op", "blur"), ("sigma", "3"), ("format", "png")])
        .await
        .expect("submit");
    let (_, result) = stack.client.result_of(&id).await.expect("result");
    let out = decode(&result.body);
    assert_eq!(out.dimensions(), input.dimensions());
    let before = laplacian_variance(&input.to_luma8());
    let after = laplacian_variance(&out.to_luma8());
    assert!(
        after < before / 10.0,
        "Laplacian variance {before:.1} → {after:.1}"
    );
    stack.stop().await.expect("stop");
}

#[tokio::test]
async fn edges_give_a_binary_edge_map() {
    let stack = stack().await;
    let id = stack
        .client
        .submit_ok(&photo("china.jpg"), &[("op", "edges"), ("format", "png")])
        .await
        .expect("submit");
    let (_, result) = stack.client.result_of(&id).await.expect("result");
    let out = decode(&result.body);
    assert_eq!(out.color(), image::ColorType::L8, "one channel");
    let gray = out.to_luma8();
    assert!(gray.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
    let edge_share = gray.pixels().filter(|p| p.0[0] == 255).count() as f64
        / f64::from(gray.width() * gray.height());
    assert!(
        (0.005..0.4).contains(&edge_share),
        "edge pixels: {:.2}%",
        edge_share * 100.0
    );
    stack.stop().await.expect("stop");
}

#[tokio::test]
async fn rotate_and_flip_map_the_corners() {
    let stack = stack().await;
    let (input, bytes) = photo_png("flower.jpg");
    let (w, h) = input.dimensions();
    let at = |img: &DynamicImage, x: u32, y: u32| img.get_pixel(x, y).0;
    let run = |fields: Vec<(&'static str, &'static str)>| {
        let client = stack.client.clone();
        let bytes = bytes.clone();
        async move {
            let mut fields = fields;
            fields.push(("format", "png"));
            let id = client.submit_ok(&bytes, &fields).await.expect("submit");
            decode(&client.result_of(&id).await.expect("result").1.body)
        }
    };

    let r90 = run(vec![("op", "rotate"), ("degrees", "90")]).await;
    assert_eq!(r90.dimensions(), (h, w));
    assert_eq!(at(&r90, 0, 0), at(&input, 0, h - 1));
    assert_eq!(at(&r90, h - 1, 0), at(&input, 0, 0));
    assert_eq!(at(&r90, h - 1, w - 1), at(&input, w - 1, 0));
    assert_eq!(at(&r90, 0, w - 1), at(&input, w - 1, h - 1));

    let r180 = run(vec![("op", "rotate"), ("degrees", "180")]).await;
    assert_eq!(at(&r180, 0, 0), at(&input, w - 1, h - 1));

    let r270 = run(vec![("op", "rotate"), ("degrees", "270")]).await;
    assert_eq!(at(&r270, 0, 0), at(&input, w - 1, 0));

    let fh = run(vec![("op", "flip"), ("direction", "horizontal")]).await;
    assert_eq!(at(&fh, 0, 0), at(&input, w - 1, 0));
    assert_eq!(at(&fh, w - 1, h - 1), at(&input, 0, h - 1));

    let fv = run(vec![("op", "flip"), ("direction", "vertical")]).await;
    assert_eq!(at(&fv, 0, 0), at(&input, 0, h - 1));
    stack.stop().await.expect("stop");
}

#[tokio::test]
async fn a_three_step_pipeline_runs_in_order() {
    let stack = stack().await;
    let steps = r#"[
        {"op": "crop", "x": 100, "y": 50, "width": 800, "height": 600},
        {"op": "resize", "width": 400},
        {"op": "grayscale"}
    ]"#;
    let id = stack
        .client
        .submit_ok(
            &photo("FreshFlower.jpg"),
            &[("steps", steps), ("format", "png")],
        )
        .await
        .expect("submit");
    let (job, result) = stack.client.result_of(&id).await.expect("result");
    assert_eq!(job["steps"].as_array().map(Vec::len), Some(3));
    let out = decode(&result.body);
    assert_eq!(out.dimensions(), (400, 300));
    assert_eq!(out.color(), image::ColorType::L8);
    assert_eq!(result.headers["content-type"], "image/png");
    stack.stop().await.expect("stop");
}

#[tokio::test]
async fn a_raw_body_with_query_parameters_works() {
    let stack = stack().await;
    let reply = stack
        .client
        .submit_raw(photo("china.jpg"), "op=resize&width=320&format=webp")
        .await
        .expect("submit");
    assert_eq!(
        reply.status,
        202,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let id = reply.json()["id"].as_str().expect("id").to_string();
    let (_, result) = stack.client.result_of(&id).await.expect("result");
    assert_eq!(result.headers["content-type"], "image/webp");
    // 640×427 scaled to width 320 keeps the aspect ratio.
    assert_eq!(decode(&result.body).dimensions(), (320, 214));
    stack.stop().await.expect("stop");
}

/// A job waits in the queue while no worker runs; its result is a clear 409 meanwhile.
/// Its input then disappears, and the worker that finally takes it answers `failed`.
#[tokio::test]
async fn a_worker_failure_is_reported_with_its_code() {
    let mut stack = Stack::start().await.expect("start");
    let ok_id = stack
        .client
        .submit_ok(&photo("china.jpg"), &[("op", "grayscale")])
        .await
        .expect("submit");
    let doomed_id = stack
        .client
        .submit_ok(&photo("china.jpg"), &[("op", "grayscale")])
        .await
        .expect("submit");

    let early = stack
        .client
        .get(&format!("/v1/jobs/{ok_id}/result"))
        .await
        .expect("get");
    assert_eq!(early.status, 409);
    assert_eq!(early.error_code(), "not_ready");
    let status = stack
        .client
        .get(&format!("/v1/jobs/{ok_id}"))
        .await
        .expect("get")
        .json();
    assert_eq!(status["state"], "queued");

    std::fs::remove_file(stack.blob_dir().join("inputs").join(&doomed_id)).expect("remove input");
    stack.add_worker("late-worker", 1);

    let ok = stack.client.wait_terminal(&ok_id).await.expect("wait");
    assert_eq!(ok["state"], "succeeded");
    assert_eq!(ok["worker"], "late-worker");
    let doomed = stack.client.wait_terminal(&doomed_id).await.expect("wait");
    assert_eq!(doomed["state"], "failed");
    assert_eq!(doomed["error"]["code"], "input_missing");
    let result = stack
        .client
        .get(&format!("/v1/jobs/{doomed_id}/result"))
        .await
        .expect("get");
    assert_eq!(result.status, 409);
    assert_eq!(result.error_code(), "job_failed");
    stack.stop().await.expect("stop");
}

/// With no broker at all, a submit fails fast with 503 and leaves nothing behind.
#[tokio::test]
async fn no_broker_means_a_quick_503_and_nothing_left_behind() {
    let mut common = pixmill_tests::common("test-nobroker", &pixmill_tests::temp_dir());
    // Port 9 (discard) is closed on test machines: connection refused at once.
    common.amqp_url = "amqp://guest:guest@127.0.0.1:9/%2f".into();
    let stack = Stack::start_with(common).await.expect("start");
    let started = std::time::Instant::now();
    let reply = stack
        .client
        .submit(&photo("china.jpg"), &[("op", "grayscale")])
        .await
        .expect("submit");
    assert_eq!(reply.status, 503);
    assert_eq!(reply.error_code(), "broker_unavailable");
    assert!(reply.headers.contains_key("retry-after"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let leftovers = std::fs::read_dir(stack.blob_dir().join("inputs"))
        .expect("inputs dir")
        .count();
    assert_eq!(leftovers, 0, "the withdrawn upload was removed");
    let ready = stack.client.get("/readyz").await.expect("readyz");
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["broker"], "unavailable");
    let _ = tokio::time::timeout(TIMEOUT, async {
        let data = stack.common.data_dir.clone();
        drop(stack);
        let _ = std::fs::remove_dir_all(data);
    })
    .await;
}
