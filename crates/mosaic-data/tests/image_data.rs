//! Image data sets, decoding errors, batches and augmentation — with the bad inputs of issue 6: truncated and
//! zero-size files, grayscale and RGBA images, a label folder without images, a path escaping the data root.

use std::path::{Path, PathBuf};

use mosaic_data::image::{
    ImageAugmentation, ImageDataset, ImageError, ImageProcessor, ImageProcessorConfig,
    ImageRecordConfig, ImageTextDataset, OnBadImage, RgbImage, decode_bytes, decode_file,
    resolve_inside,
};

fn write_png(path: &Path, width: u32, height: u32, seed: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            (x as u8).wrapping_mul(37).wrapping_add(seed),
            (y as u8).wrapping_mul(11),
            seed,
        ])
    });
    img.save(path).unwrap();
}

fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_png(&root.join("cat/a.png"), 12, 10, 1);
    write_png(&root.join("cat/b.PNG"), 9, 14, 2);
    write_png(&root.join("dog/c.png"), 20, 20, 3);
    image::RgbImage::from_pixel(8, 8, image::Rgb([10, 20, 30]))
        .save(root.join("dog/d.jpg"))
        .unwrap();
    std::fs::write(root.join("dog/notes.txt"), "not an image").unwrap();
    std::fs::create_dir_all(root.join(".cache")).unwrap();
    dir
}

#[test]
fn image_folder_labels_are_sorted_folders_and_other_files_are_ignored() {
    let dir = tree();
    let ds = ImageDataset::from_folder(dir.path(), None).unwrap();
    assert_eq!(ds.labels.names(), ["cat", "dog"]);
    let rel: Vec<(String, usize)> = ds
        .examples
        .iter()
        .map(|e| {
            let p = e.path.strip_prefix(dir.path()).unwrap();
            (p.display().to_string(), e.label)
        })
        .collect();
    assert_eq!(
        rel,
        [
            ("cat/a.png".to_string(), 0),
            ("cat/b.PNG".to_string(), 0),
            ("dog/c.png".to_string(), 1),
            ("dog/d.jpg".to_string(), 1)
        ]
    );
    // An explicit label list fixes the ids.
    let labels = vec!["dog".to_string(), "cat".to_string()];
    let ds = ImageDataset::from_folder(dir.path(), Some(&labels)).unwrap();
    assert_eq!(ds.examples[0].label, 1);
}

#[test]
fn a_label_folder_without_images_is_named() {
    let dir = tree();
    std::fs::create_dir_all(dir.path().join("bird")).unwrap();
    std::fs::write(dir.path().join("bird/readme.md"), "x").unwrap();
    let e = ImageDataset::from_folder(dir.path(), None).unwrap_err();
    assert!(matches!(e, ImageError::EmptyClass { .. }), "{e}");
    assert!(e.to_string().contains("bird"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    let e = ImageDataset::from_folder(empty.path(), None).unwrap_err();
    assert!(matches!(e, ImageError::NoClasses { .. }), "{e}");
    let e = ImageDataset::from_folder(&empty.path().join("missing"), None).unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
}

#[test]
fn jsonl_records_resolve_against_the_data_root() {
    let dir = tree();
    let file = dir.path().join("train.jsonl");
    std::fs::write(
        &file,
        "{\"image\": \"cat/a.png\", \"label\": \"cat\", \"text\": \"a cat\"}\n\n\
         {\"image\": \"./dog/c.png\", \"label\": \"dog\", \"text\": \"a dog\"}\n",
    )
    .unwrap();
    let ds = ImageDataset::from_records(&file, &ImageRecordConfig::default()).unwrap();
    assert_eq!(ds.labels.names(), ["cat", "dog"]);
    assert_eq!(ds.examples[1].label, 1);
    assert!(ds.examples[1].path.is_file());
    let pairs = ImageTextDataset::from_records(&file, &ImageRecordConfig::default()).unwrap();
    assert_eq!(pairs.len(), 2);
    assert_eq!(pairs.examples[0].text, "a cat");
    // CSV works the same way.
    let csv = dir.path().join("train.csv");
    std::fs::write(&csv, "image,label\ncat/a.png,cat\n").unwrap();
    assert_eq!(
        ImageDataset::from_records(&csv, &ImageRecordConfig::default())
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn paths_outside_the_data_root_are_refused() {
    let dir = tree();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let file = data.join("train.jsonl");
    for (bad, line) in [
        ("../../etc/passwd", 2),
        ("../cat/a.png", 2),
        ("/etc/passwd", 2),
        ("x/../../y.png", 2),
    ] {
        std::fs::write(
            &file,
            format!(
                "{{\"image\": \"ok.png\", \"label\": \"a\"}}\n{{\"image\": \"{bad}\", \"label\": \"b\"}}\n"
            ),
        )
        .unwrap();
        let e = ImageDataset::from_records(&file, &ImageRecordConfig::default()).unwrap_err();
        assert!(matches!(e, ImageError::OutsideRoot { .. }), "{bad}: {e}");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("train.jsonl:{line}")) && msg.contains(bad),
            "{msg}"
        );
    }
    // Inside the root, `..` that stays inside is fine.
    assert!(resolve_inside(&data, "sub/../ok.png").is_some());
    assert!(resolve_inside(&data, "").is_none());
    // A symbolic link inside the root that points outside is refused too.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(dir.path().join("cat/a.png"), data.join("link.png")).unwrap();
        assert!(resolve_inside(&data, "link.png").is_none());
    }
}

#[test]
fn a_missing_field_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("d.jsonl");
    std::fs::write(
        &file,
        "{\"image\": \"a.png\", \"label\": \"x\"}\n{\"label\": \"y\"}\n",
    )
    .unwrap();
    let e = ImageDataset::from_records(&file, &ImageRecordConfig::default()).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("d.jsonl:2") && msg.contains("image"), "{msg}");
}

#[test]
fn unreadable_truncated_and_zero_size_images_name_their_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.png");
    write_png(&good, 16, 16, 5);
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.png");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let empty = dir.path().join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let text = dir.path().join("text.png");
    std::fs::write(&text, b"hello, not an image").unwrap();
    for (path, kind) in [
        (&truncated, "decode"),
        (&empty, "empty"),
        (&text, "not a PNG or JPEG"),
        (&dir.path().join("missing.png"), "cannot read"),
    ] {
        let e = decode_file(path).unwrap_err().to_string();
        assert!(
            e.contains(path.file_name().unwrap().to_str().unwrap()),
            "{e}"
        );
        assert!(e.contains(kind), "`{kind}` not in {e}");
    }
    // A PNG header claiming 0x0 pixels.
    let mut zero = bytes.clone();
    zero[16..24].copy_from_slice(&[0; 8]);
    let e = decode_bytes(&zero, Path::new("zero.png"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("zero.png"), "{e}");
}

/// A 954-byte JPEG the fuzzer found (fuzz/regressions/image/): its header declares 12081x8488 pixels, and decoding it
/// took seconds. It is refused from the header, naming the file and the declared size.
#[test]
fn an_image_declaring_too_many_pixels_is_refused_before_decoding() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions/image/huge-declared-jpeg");
    let e = decode_file(&path).unwrap_err();
    assert!(matches!(e, ImageError::TooLarge { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("huge-declared-jpeg"), "{text}");
    assert!(text.contains("over the limit"), "{text}");
}

#[test]
fn grayscale_and_rgba_are_converted_like_pil() {
    let dir = tempfile::tempdir().unwrap();
    let gray = dir.path().join("gray.png");
    image::GrayImage::from_raw(2, 1, vec![7, 200])
        .unwrap()
        .save(&gray)
        .unwrap();
    assert_eq!(
        decode_file(&gray).unwrap().pixels(),
        [7, 7, 7, 200, 200, 200]
    );
    let rgba = dir.path().join("rgba.png");
    image::RgbaImage::from_raw(3, 1, vec![0, 0, 0, 0, 10, 20, 30, 255, 0, 100, 200, 128])
        .unwrap()
        .save(&rgba)
        .unwrap();
    // Transparent -> white; opaque -> unchanged; half -> PIL's rounded blend with white.
    assert_eq!(
        decode_file(&rgba).unwrap().pixels(),
        [255, 255, 255, 10, 20, 30, 127, 177, 227]
    );
    let la = dir.path().join("la.png");
    image::GrayAlphaImage::from_raw(1, 1, vec![0, 128])
        .unwrap()
        .save(&la)
        .unwrap();
    assert_eq!(decode_file(&la).unwrap().pixels(), [127, 127, 127]);
}

fn processor() -> ImageProcessor {
    ImageProcessor::new(ImageProcessorConfig::clip(8))
}

#[test]
fn batches_decode_in_parallel_keep_order_and_stop_or_skip() {
    let dir = tree();
    let mut paths: Vec<PathBuf> = ["cat/a.png", "dog/c.png", "cat/b.PNG", "dog/d.jpg"]
        .iter()
        .map(|p| dir.path().join(p))
        .collect();
    let batch = processor().load_batch(&paths, OnBadImage::Stop).unwrap();
    assert_eq!(batch.shape, [4, 3, 8, 8]);
    assert_eq!(batch.kept, [0, 1, 2, 3]);
    // Row 1 is dog/c.png, whatever thread decoded it.
    let single = processor()
        .preprocess(&decode_file(&paths[1]).unwrap())
        .unwrap();
    assert_eq!(&batch.pixel_values[192..384], &single.data[..]);

    let bad = dir.path().join("cat/broken.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nbroken").unwrap();
    paths.insert(2, bad);
    let e = processor()
        .load_batch(&paths, OnBadImage::Stop)
        .unwrap_err();
    assert!(e.to_string().contains("broken.png"), "{e}");
    let batch = processor().load_batch(&paths, OnBadImage::Skip).unwrap();
    assert_eq!(batch.shape[0], 4);
    assert_eq!(batch.kept, [0, 1, 3, 4]);
    assert_eq!(batch.skipped.len(), 1);
    assert!(batch.skipped[0].to_string().contains("broken.png"));
    // A batch of only bad images fails even when skipping.
    let e = processor()
        .load_batch(&paths[2..3], OnBadImage::Skip)
        .unwrap_err();
    assert!(
        e.to_string().contains("1 skipped") && e.to_string().contains("broken.png"),
        "{e}"
    );
}

fn sample_image() -> RgbImage {
    RgbImage::from_fn(20, 13, |x, y| {
        [(x * 12) as u8, (y * 19) as u8, ((x + y) * 5) as u8]
    })
    .unwrap()
}

#[test]
fn augmentation_is_seeded_per_stream_and_sized_by_the_processor() {
    let aug = ImageAugmentation {
        brightness: 0.4,
        contrast: 0.4,
        saturation: 0.4,
        seed: 7,
        ..Default::default()
    };
    let p = processor();
    let img = sample_image();
    let a = aug.apply(&img, &p, 3).unwrap();
    assert_eq!(a.shape(), [3, 8, 8]);
    assert_eq!(a, aug.apply(&img, &p, 3).unwrap(), "same seed and stream");
    let differs = (0..8).any(|s| aug.apply(&img, &p, s).unwrap() != a);
    assert!(differs, "streams must give different draws");
    let other = ImageAugmentation {
        seed: 8,
        ..aug.clone()
    };
    assert_ne!(other.apply(&img, &p, 3).unwrap(), a);
}

#[test]
fn flip_only_augmentation_is_the_mirrored_eval_image() {
    let aug = ImageAugmentation {
        random_resized_crop: false,
        hflip_prob: 1.0,
        ..Default::default()
    };
    let p = processor();
    let img = sample_image();
    let flipped = aug.apply(&img, &p, 0).unwrap();
    let expected = p.to_pixel_values(&p.resize_and_crop(&img).unwrap().flip_horizontal());
    assert_eq!(flipped, expected);
    let none = ImageAugmentation {
        random_resized_crop: false,
        hflip_prob: 0.0,
        ..Default::default()
    };
    assert_eq!(
        none.apply(&img, &p, 0).unwrap(),
        p.preprocess(&img).unwrap()
    );
}

#[test]
fn bad_augmentation_settings_are_refused() {
    for aug in [
        ImageAugmentation {
            scale: [0.5, 0.2],
            ..Default::default()
        },
        ImageAugmentation {
            ratio: [0.0, 1.0],
            ..Default::default()
        },
        ImageAugmentation {
            hflip_prob: 1.5,
            ..Default::default()
        },
        ImageAugmentation {
            brightness: -1.0,
            ..Default::default()
        },
    ] {
        assert!(aug.validate().is_err(), "{aug:?}");
    }
    // Random resized crop needs a fixed output size.
    let mut config = ImageProcessorConfig::clip(8);
    config.do_center_crop = false;
    let e = ImageAugmentation::default()
        .apply(&sample_image(), &ImageProcessor::new(config), 0)
        .unwrap_err();
    assert!(e.to_string().contains("fixed output size"), "{e}");
}
