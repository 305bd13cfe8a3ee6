//! One upload, many outputs: a job with variants, end to end on real photographs,
//! against the same steps run as jobs of their own.

use image::GenericImageView;
use pixmill_tests::{
    Stack,
    photos::{decode, photo, psnr},
};
use serde_json::{Value, json};

/// The bound every output keeps against the same steps run as a job of its own. The
/// one decode is at the scale the largest variant needs; a job of its own may decode
/// smaller (libjpeg-turbo's DCT scaling), so the two differ by their resampling and the
/// JPEG rounding after it. An output that needs the same decode scale as its own job is
/// the same bytes (infinite PSNR). The lowest seen on the test photographs is 34 dB, on
/// the fine sand texture of Dune.jpg at 320 px.
const MIN_PSNR_DB: f64 = 32.0;

/// The srcset case: widths 320, 640 and 1280 in JPEG q80, and a WebP copy at 640.
fn srcset() -> Value {
    let resize = |w: u32| json!([{"op": "resize", "width": w}]);
    json!([
        {"name": "w320", "steps": resize(320), "format": "jpeg", "quality": 80},
        {"name": "w640", "steps": resize(640), "format": "jpeg", "quality": 80},
        {"name": "w1280", "steps": resize(1280), "format": "jpeg", "quality": 80},
        {"name": "w640-webp", "steps": resize(640), "format": "webp", "quality": 80},
    ])
}

#[tokio::test]
async fn one_upload_makes_every_variant_as_its_own_job_would() {
    let mut stack = Stack::start().await.expect("start stack");
    stack.add_worker("variants-worker", 2);
    let client = &stack.client;
    let variants = srcset();
    let variants_text = variants.to_string();
    let mut lowest = f64::INFINITY;
    for name in ["FreshFlower.jpg", "Dune.jpg", "Storm.jpg"] {
        let input = photo(name);
        let id = client
            .submit_ok(&input, &[("variants", variants_text.as_str())])
            .await
            .expect("submit");
        let (job, first) = client.result_of(&id).await.expect("result");
        let listed: Vec<(&Value, &Value, &Value)> = job["variants"]
            .as_array()
            .expect("the job lists its variants")
            .iter()
            .map(|v| (&v["name"], &v["format"], &v["steps"][0]["width"]))
            .collect();
        let asked: Vec<(&Value, &Value, &Value)> = variants
            .as_array()
            .expect("array")
            .iter()
            .map(|v| (&v["name"], &v["format"], &v["steps"][0]["width"]))
            .collect();
        assert_eq!(listed, asked, "{name}: the job lists its variants");
        let outputs = job["result"]["outputs"]
            .as_array()
            .expect("outputs")
            .clone();
        let names: Vec<&str> = outputs.iter().filter_map(|o| o["name"].as_str()).collect();
        assert_eq!(names, ["w320", "w640", "w1280", "w640-webp"], "{name}");
        for (output, variant) in outputs.iter().zip(variants.as_array().expect("array")) {
            let url = output["url"].as_str().expect("url");
            assert_eq!(
                url,
                format!(
                    "/v1/jobs/{id}/result/{}",
                    output["name"].as_str().expect("name")
                )
            );
            let got = client.get(url).await.expect("download");
            assert_eq!(got.status, 200, "{name} {url}");
            let format = variant["format"].as_str().expect("format");
            assert_eq!(got.headers["content-type"], format!("image/{format}"));
            assert_eq!(
                got.body.len() as u64,
                output["bytes"].as_u64().expect("bytes"),
                "{name} {url}: the record gives the size"
            );
            let ours = decode(&got.body);
            assert_eq!(
                ours.dimensions(),
                (
                    u32::try_from(output["width"].as_u64().expect("w")).expect("w"),
                    u32::try_from(output["height"].as_u64().expect("h")).expect("h")
                )
            );
            assert_eq!(
                ours.width(),
                u32::try_from(variant["steps"][0]["width"].as_u64().expect("width")).expect("w")
            );
            // The same steps as a job of their own.
            let steps = variant["steps"].to_string();
            let quality = variant["quality"].to_string();
            let alone = client
                .submit_ok(
                    &input,
                    &[("steps", &steps), ("format", format), ("quality", &quality)],
                )
                .await
                .expect("submit alone");
            let (_, theirs) = client.result_of(&alone).await.expect("alone");
            let db = psnr(&ours, &decode(&theirs.body));
            println!(
                "{name} {}: PSNR {db:.1} dB against its own job",
                output["name"]
            );
            assert!(
                db >= MIN_PSNR_DB,
                "{name} {}: PSNR {db:.1} dB < {MIN_PSNR_DB}",
                output["name"]
            );
            lowest = lowest.min(db);
        }
        // The plain result URL serves the first output.
        let w320 = client
            .get(&format!("/v1/jobs/{id}/result/w320"))
            .await
            .expect("w320");
        assert_eq!(first.body, w320.body, "{name}: /result is the first output");
        // An unknown name is a 404 that names the outputs there are.
        let missing = client
            .get(&format!("/v1/jobs/{id}/result/w999"))
            .await
            .expect("w999");
        assert_eq!(missing.status, 404);
        assert_eq!(missing.error_code(), "not_found");
        assert!(
            missing
                .error_message()
                .contains("w320, w640, w1280, w640-webp"),
            "{}",
            missing.error_message()
        );
        // Deleting the result deletes every output.
        let deleted = client
            .delete(&format!("/v1/jobs/{id}"))
            .await
            .expect("delete");
        assert_eq!(
            deleted.status,
            200,
            "{}",
            String::from_utf8_lossy(&deleted.body)
        );
        let gone = client
            .get(&format!("/v1/jobs/{id}/result/w1280"))
            .await
            .expect("gone");
        assert_eq!(gone.status, 410);
        assert_eq!(gone.error_code(), "result_deleted");
    }
    println!("lowest PSNR of any output against its own job: {lowest:.1} dB");
    stack.stop().await.expect("stop");
}

#[tokio::test]
async fn shared_steps_run_first_and_mistakes_are_refused_by_name() {
    let mut stack = Stack::start().await.expect("start stack");
    stack.add_worker("variants-worker", 1);
    let client = &stack.client;
    let input = photo("FreshFlower.jpg");
    let source = decode(&input);
    // A shared crop to the left half, then two sizes of it.
    let (w, h) = source.dimensions();
    let crop = json!([{"op": "crop", "x": 0, "y": 0, "width": w / 2, "height": h}]).to_string();
    let variants = json!([
        {"name": "small", "steps": [{"op": "resize", "width": 200}], "format": "png"},
        {"name": "gray", "steps": [{"op": "grayscale"}]},
    ])
    .to_string();
    let id = client
        .submit_ok(
            &input,
            &[
                ("steps", &crop),
                ("variants", &variants),
                ("format", "jpeg"),
            ],
        )
        .await
        .expect("submit");
    let (job, _) = client.result_of(&id).await.expect("result");
    let outputs = &job["result"]["outputs"];
    assert_eq!(outputs[0]["width"], 200);
    assert_eq!(outputs[0]["content_type"], "image/png");
    assert_eq!(outputs[1]["width"], w / 2, "the crop ran first");
    assert_eq!(outputs[1]["content_type"], "image/jpeg", "the job's format");
    let gray = client
        .get(&format!("/v1/jobs/{id}/result/gray"))
        .await
        .expect("gray");
    assert_eq!(decode(&gray.body).color().channel_count(), 1);

    // A job without variants has no named outputs.
    let plain = client
        .submit_ok(&input, &[("op", "grayscale")])
        .await
        .expect("plain");
    client.result_of(&plain).await.expect("plain result");
    let none = client
        .get(&format!("/v1/jobs/{plain}/result/w320"))
        .await
        .expect("none");
    assert_eq!(none.status, 404);
    assert!(none.error_message().contains("has no variants"));

    // Mistakes name the variant and the limit at fault, before anything is stored.
    let too_big = json!([{"name": "huge", "steps": [{"op": "resize", "width": 9000, "height": 9000, "fit": "fill"}]}])
        .to_string();
    for (fields, status, code, words) in [
        (
            vec![("variants", r#"[{"name":"a"},{"name":"a"}]"#)],
            422,
            "invalid_parameter",
            "variants[1].name \"a\" is used twice",
        ),
        (
            vec![("variants", too_big.as_str())],
            422,
            "too_many_pixels",
            "variants[0] (huge)",
        ),
    ] {
        let reply = client.submit(&input, &fields).await.expect("submit");
        assert_eq!(
            reply.status,
            status,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        assert_eq!(reply.error_code(), code);
        assert!(
            reply.error_message().contains(words),
            "{}",
            reply.error_message()
        );
    }
    stack.stop().await.expect("stop");
}
