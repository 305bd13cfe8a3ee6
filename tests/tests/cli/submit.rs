//! `pixmill submit`: steps in order, results in a folder, patterns, `--json`, a job
//! the gateway refuses, and variants, each output downloaded.

use pixmill_tests::{Stack, photos, temp_dir};

use super::{photo, pixmill, size_of, stack_with_worker};

#[tokio::test]
async fn submit_resizes_several_photos_into_a_folder() {
    let stack = stack_with_worker().await;
    let out = temp_dir().join("thumbs");
    let out_arg = format!("{}/", out.display());
    let names = ["flower.jpg", "FreshFlower.jpg", "GreenMeadow.jpg"];
    let files: Vec<String> = names.iter().map(|n| photo(n)).collect();
    let mut args: Vec<&str> = vec!["submit"];
    args.extend(files.iter().map(String::as_str));
    args.extend(["--resize", "320x200", "--wait", "-o", &out_arg]);
    let run = pixmill(&stack.base, &args).await;
    assert_eq!(run.code, 0, "{run:#?}");
    for name in names {
        let stem = name.trim_end_matches(".jpg");
        let result = out.join(format!("{stem}.jpg"));
        // The default fit is `cover`: exactly the box, the overflow cropped.
        assert_eq!(size_of(&result), (320, 200), "{}", result.display());
        assert!(
            run.stdout.contains(&result.display().to_string()),
            "{run:#?}"
        );
    }
    assert!(run.stdout.contains("3 files: 3 succeeded"), "{run:#?}");
    assert!(
        run.stdout
            .lines()
            .next()
            .is_some_and(|h| h.starts_with("FILE")),
        "{run:#?}"
    );
    let _ = std::fs::remove_dir_all(&out);
    stack.stop().await.expect("stop");
}

#[tokio::test]
async fn step_flags_keep_their_order_and_json_parses() {
    let stack = stack_with_worker().await;
    let flower = photo("flower.jpg"); // 640×427
    let sizes = async |steps: &[&str]| {
        let mut args = vec!["submit", flower.as_str(), "--wait", "--json"];
        args.extend_from_slice(steps);
        let run = pixmill(&stack.base, &args).await;
        assert_eq!(run.code, 0, "{run:#?}");
        let reports = run.json();
        let reports = reports.as_array().expect("an array of per-file results");
        assert_eq!(reports.len(), 1, "{run:#?}");
        let report = &reports[0];
        assert_eq!(report["state"], "succeeded", "{run:#?}");
        assert!(
            report["id"].is_string() && report["error"].is_null(),
            "{run:#?}"
        );
        assert_eq!(report["job"]["id"], report["id"]);
        let result = &report["job"]["result"];
        (result["width"].as_u64(), result["height"].as_u64())
    };
    // Rotated to 427×640, then a 300×100 crop.
    let rotate_then_crop = sizes(&["--rotate", "90", "--crop", "0,0,300,100"]).await;
    // A 300×100 crop, then rotated.
    let crop_then_rotate = sizes(&["--crop", "0,0,300,100", "--rotate", "90"]).await;
    assert_eq!(rotate_then_crop, (Some(300), Some(100)));
    assert_eq!(crop_then_rotate, (Some(100), Some(300)));
    // --steps passes a pipeline through as written.
    let raw = sizes(&[
        "--steps",
        r#"[{"op":"crop","x":0,"y":0,"width":300,"height":100},{"op":"rotate","degrees":90}]"#,
    ])
    .await;
    assert_eq!(raw, (Some(100), Some(300)));
    stack.stop().await.expect("stop");
}

#[tokio::test]
async fn a_pattern_the_shell_left_alone_is_expanded() {
    let stack = Stack::start().await.expect("start stack");
    let dir = temp_dir();
    std::fs::create_dir_all(&dir).expect("dir");
    for name in ["flower.jpg", "china.jpg"] {
        std::fs::copy(photos::dir().join(name), dir.join(name)).expect("copy");
    }
    std::fs::write(dir.join("notes.txt"), "not a photo").expect("write");
    // No shell here: the binary gets the pattern itself.
    let pattern = format!("{}/*.jpg", dir.display());
    let run = pixmill(&stack.base, &["submit", &pattern, "--swap", "--json"]).await;
    assert_eq!(run.code, 0, "{run:#?}");
    let files: Vec<String> = run
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            assert_eq!(r["state"], "queued", "without --wait the answer is the 202");
            r["file"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    let expected: Vec<String> = ["china.jpg", "flower.jpg"]
        .iter()
        .map(|n| dir.join(n).display().to_string())
        .collect();
    assert_eq!(files, expected);
    let _ = std::fs::remove_dir_all(&dir);
    stack.stop().await.expect("stop");
}

#[tokio::test]
async fn a_refused_job_exits_1_and_the_others_still_run() {
    let stack = stack_with_worker().await;
    let small = photo("flower.jpg"); // 640×427: a 1000×1000 crop lies outside it
    let large = photo("GreenMeadow.jpg"); // 1280×1024
    let run = pixmill(
        &stack.base,
        &[
            "submit",
            &small,
            &large,
            "--crop",
            "0,0,1000,1000",
            "--wait",
            "--json",
        ],
    )
    .await;
    assert_eq!(run.code, 1, "{run:#?}");
    let reports = run.json();
    assert_eq!(reports[0]["state"], "not_submitted", "{run:#?}");
    assert_eq!(reports[0]["error"]["code"], "invalid_parameter");
    assert_eq!(reports[0]["error"]["http_status"], 422);
    assert_eq!(reports[1]["state"], "succeeded", "{run:#?}");
    // The gateway's own words reach stderr, as `code: message`.
    assert!(run.stderr.contains("invalid_parameter: "), "{run:#?}");
    assert!(
        run.stderr.contains("640×427"),
        "the message names the image size: {run:#?}"
    );
    stack.stop().await.expect("stop");
}

#[tokio::test]
async fn variants_are_each_downloaded_and_reported() {
    let stack = stack_with_worker().await;
    let flower = photo("flower.jpg"); // 640×427
    let out = temp_dir().join("sizes");
    let out_arg = format!("{}/", out.display());
    let run = pixmill(
        &stack.base,
        &[
            "submit",
            &flower,
            "--grayscale",
            "--variant",
            "w160:160",
            "--variant",
            "w320-webp:320:webp",
            "--variant",
            r#"crop=[{"op":"crop","x":0,"y":0,"width":100,"height":50}]"#,
            "--json",
            "-o",
            &out_arg,
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run:#?}");
    let reports = run.json();
    let report = &reports[0];
    assert_eq!(report["state"], "succeeded", "{run:#?}");
    let outputs = report["outputs"].as_array().expect("outputs");
    let expected = [
        ("w160", "flower-w160.jpg", "image/jpeg", (160, 107)),
        (
            "w320-webp",
            "flower-w320-webp.webp",
            "image/webp",
            (320, 214),
        ),
        ("crop", "flower-crop.jpg", "image/jpeg", (100, 50)),
    ];
    assert_eq!(outputs.len(), expected.len(), "{run:#?}");
    for (output, (name, file, content_type, (w, h))) in outputs.iter().zip(expected) {
        let path = out.join(file);
        assert_eq!(output["name"], name, "{run:#?}");
        assert_eq!(output["content_type"], content_type, "{run:#?}");
        assert_eq!(output["path"], path.display().to_string(), "{run:#?}");
        // The rounding of a kept aspect ratio is the worker's: a pixel either way.
        let (width, height) = size_of(&path);
        assert_eq!(width, w, "{}", path.display());
        assert!(
            height.abs_diff(h) <= 1,
            "{}: {width}x{height}",
            path.display()
        );
        assert_eq!(
            output["bytes"].as_u64(),
            std::fs::metadata(&path).ok().map(|m| m.len()),
            "{run:#?}"
        );
    }
    assert_eq!(
        report["output"],
        out.join("flower-w160.jpg").display().to_string(),
        "the first output is the job's result"
    );

    // One output again, by name; an unknown name is the gateway's 404.
    let id = report["id"].as_str().expect("id");
    let again = out.join("again.webp").display().to_string();
    let run = pixmill(
        &stack.base,
        &["get", id, "--variant", "w320-webp", "-o", &again],
    )
    .await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(size_of(std::path::Path::new(&again)).0, 320);
    let run = pixmill(&stack.base, &["get", id, "--variant", "w999", "-o", &again]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("not_found"), "{run:#?}");

    // The text report has a line per output.
    let run = pixmill(&stack.base, &["status", id]).await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stdout.contains("output    w320-webp: image/webp 320x"),
        "{run:#?}"
    );
    let _ = std::fs::remove_dir_all(&out);
    stack.stop().await.expect("stop");
}
