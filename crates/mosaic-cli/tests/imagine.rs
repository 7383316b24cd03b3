//! `mosaic imagine` through the real binary: a text-to-image checkpoint trained here (`mosaic train` on a few
//! scene captions with the tiny LLaVA) draws a PNG of the asked size; bad input is one clear error line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn mosaic(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mosaic"))
        .args(args)
        .env(
            "MOSAIC_CACHE",
            std::env::temp_dir().join("mosaic-test-cache"),
        )
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A text-to-image run on 8 scene captions (1 epoch); returns its `best/`.
fn train(dir: &Path) -> PathBuf {
    let scenes = fixtures().join("data/scenes");
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(scenes.join("captions-train.json")).unwrap())
            .unwrap();
    let rows: Vec<_> = rows.into_iter().take(8).collect();
    std::fs::create_dir_all(dir.join("images")).unwrap();
    for row in &rows {
        let image = row["image"].as_str().unwrap();
        std::fs::copy(scenes.join(image), dir.join(image)).unwrap();
    }
    let data = dir.join("captions.json");
    std::fs::write(&data, serde_json::to_string(&rows).unwrap()).unwrap();
    let recipe = dir.join("recipe.toml");
    std::fs::write(
        &recipe,
        format!(
            "task = \"text-to-image\"\nmodel = \"{}\"\noutput = \"{}\"\n[data]\ntrain = \"{}\"\n\
             [train]\nepochs = 1\nbatch_size = 4\nlr = 1e-2\n",
            fixtures().join("models/tiny-llava").display(),
            dir.join("run").display(),
            data.display()
        ),
    )
    .unwrap();
    let out = mosaic(&["train", recipe.to_str().unwrap()]);
    assert!(out.status.success(), "train failed: {}", stderr(&out));
    dir.join("run/best")
}

#[test]
fn imagine_writes_a_png_of_the_asked_size_and_refuses_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let best = train(tmp.path());
    let png = tmp.path().join("out/two-red.png");
    let out = mosaic(&[
        "imagine",
        "--model",
        best.to_str().unwrap(),
        "--prompt",
        "two red squares",
        "--output",
        png.to_str().unwrap(),
        "--scale",
        "3",
    ]);
    assert!(out.status.success(), "imagine failed: {}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("two-red.png"));
    let image = image::open(&png).unwrap();
    assert_eq!((image.width(), image.height()), (96, 96));

    let llava = fixtures().join("models/tiny-llava");
    let run = tmp.path().join("run");
    let missing = tmp.path().join("nowhere");
    for (model, needle) in [
        (llava.as_path(), "not a text-to-image checkpoint"),
        (run.as_path(), "give its best/"),
        (missing.as_path(), "no such folder"),
    ] {
        let bad = tmp.path().join("bad.png");
        let out = mosaic(&[
            "imagine",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "a red square",
            "--output",
            bad.to_str().unwrap(),
        ]);
        let err = stderr(&out);
        assert!(!out.status.success());
        assert!(err.contains(needle), "{needle}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!bad.exists());
    }
    // A checkpoint whose decoder file is gone names it.
    std::fs::remove_file(best.join("decoder.safetensors")).unwrap();
    let out = mosaic(&[
        "imagine",
        "--model",
        best.to_str().unwrap(),
        "--prompt",
        "a red square",
        "--output",
        tmp.path().join("x.png").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("decoder.safetensors"),
        "{}",
        stderr(&out)
    );
}
