//! Reading a COCO detection file from parsed JSON, naming the file and the entry in every error.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::dataset::{BOX_TOLERANCE, CocoAnnotation, CocoCategory, CocoDataset, CocoImage};
use crate::error::{DataError, Result};

/// Walks the parsed JSON, naming the file and the entry in every error.
pub(super) struct Parser<'p> {
    pub(super) path: &'p Path,
}

impl Parser<'_> {
    fn err(&self, entry: impl Into<String>, message: impl Into<String>) -> DataError {
        DataError::Coco {
            path: self.path.to_path_buf(),
            entry: entry.into(),
            message: message.into(),
        }
    }

    pub(super) fn dataset(&self, value: &Value, path: PathBuf) -> Result<CocoDataset> {
        let top = value.as_object().ok_or_else(|| {
            self.err(
                "top level",
                format!(
                    "expected a JSON object with `images`, `annotations` and `categories`, found {}",
                    kind(value)
                ),
            )
        })?;
        let images = self.list(top, "images", true)?;
        let categories = self.list(top, "categories", true)?;
        let annotations = self.list(top, "annotations", false)?;

        let mut parsed_images = Vec::with_capacity(images.len());
        let mut image_index = HashMap::new();
        for (i, v) in images.iter().enumerate() {
            let image = self.image(i, v)?;
            match image_index.entry(image.id) {
                Entry::Occupied(first) => {
                    return Err(self.err(
                        format!("image {} (index {i})", image.id),
                        format!("duplicate image id (first at index {})", first.get()),
                    ));
                }
                Entry::Vacant(slot) => {
                    slot.insert(i);
                }
            }
            parsed_images.push(image);
        }

        let mut parsed_categories = Vec::with_capacity(categories.len());
        let mut seen = HashMap::new();
        for (i, v) in categories.iter().enumerate() {
            let at = format!("categories[{i}]");
            let obj = self.object(v, &at)?;
            let id = self.integer(obj, "id", &at)?;
            let name = self.string(obj, "name", &at)?;
            if let Some(first) = seen.insert(id, i) {
                return Err(self.err(
                    format!("category {id} (index {i})"),
                    format!("duplicate category id (first at index {first})"),
                ));
            }
            parsed_categories.push(CocoCategory { id, name });
        }
        parsed_categories.sort_by_key(|c| c.id);
        let labels: HashMap<i64, usize> = parsed_categories
            .iter()
            .enumerate()
            .map(|(label, c)| (c.id, label))
            .collect();

        let mut parsed_annotations = Vec::with_capacity(annotations.len());
        let mut per_image = vec![Vec::new(); parsed_images.len()];
        let mut seen = HashMap::new();
        for (i, v) in annotations.iter().enumerate() {
            let at = format!("annotations[{i}]");
            let obj = self.object(v, &at)?;
            let id = self.integer(obj, "id", &at)?;
            let entry = format!("annotation {id} (index {i})");
            if let Some(first) = seen.insert(id, i) {
                return Err(self.err(
                    entry,
                    format!("duplicate annotation id (first at index {first})"),
                ));
            }
            let image_id = self.integer(obj, "image_id", &at)?;
            let category_id = self.integer(obj, "category_id", &at)?;
            let Some(&position) = image_index.get(&image_id) else {
                return Err(self.err(entry, format!("unknown image_id {image_id}")));
            };
            let Some(&label) = labels.get(&category_id) else {
                return Err(self.err(entry, format!("unknown category_id {category_id}")));
            };
            let file_bbox = self.bbox(obj, &at)?;
            let bbox = self.clip(&parsed_images[position], file_bbox, &entry)?;
            let area = match obj.get("area") {
                None | Some(Value::Null) => file_bbox[2] * file_bbox[3],
                Some(v) => match v.as_f64() {
                    Some(a) if a >= 0.0 => a,
                    _ => {
                        return Err(self.err(
                            format!("{at}.area"),
                            format!("expected a non-negative number, found {}", show(v)),
                        ));
                    }
                },
            };
            let iscrowd = match obj.get("iscrowd") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(v) => match v.as_f64() {
                    Some(0.0) => false,
                    Some(1.0) => true,
                    _ => {
                        return Err(self.err(
                            format!("{at}.iscrowd"),
                            format!("expected 0 or 1, found {}", show(v)),
                        ));
                    }
                },
            };
            per_image[position].push(parsed_annotations.len());
            parsed_annotations.push(CocoAnnotation {
                id,
                image_id,
                category_id,
                label,
                bbox,
                file_bbox,
                area,
                iscrowd,
            });
        }

        Ok(CocoDataset {
            path,
            images: parsed_images,
            categories: parsed_categories,
            annotations: parsed_annotations,
            image_index,
            labels,
            per_image,
        })
    }

    fn image(&self, i: usize, v: &Value) -> Result<CocoImage> {
        let at = format!("images[{i}]");
        let obj = self.object(v, &at)?;
        let id = self.integer(obj, "id", &at)?;
        let file_name = self.string(obj, "file_name", &at)?;
        let mut size = [0u32; 2];
        for (slot, key) in size.iter_mut().zip(["width", "height"]) {
            let value = self.integer(obj, key, &at)?;
            *slot = u32::try_from(value)
                .ok()
                .filter(|&s| s > 0)
                .ok_or_else(|| {
                    self.err(
                        format!("image {id} (index {i})"),
                        format!("{key} must be a positive integer, got {value}"),
                    )
                })?;
        }
        Ok(CocoImage {
            id,
            file_name,
            width: size[0],
            height: size[1],
        })
    }

    /// Checks a written box against its image and clips it (see the module doc for the policy).
    fn clip(&self, image: &CocoImage, b: [f64; 4], entry: &str) -> Result<[f64; 4]> {
        let [x, y, w, h] = b;
        if w <= 0.0 || h <= 0.0 {
            return Err(self.err(
                entry,
                format!("bbox {b:?} has a width or height that is not positive"),
            ));
        }
        let (iw, ih) = (f64::from(image.width), f64::from(image.height));
        let out = x < -BOX_TOLERANCE
            || y < -BOX_TOLERANCE
            || x + w > iw + BOX_TOLERANCE
            || y + h > ih + BOX_TOLERANCE;
        let (x0, y0) = (x.max(0.0), y.max(0.0));
        let (x1, y1) = ((x + w).min(iw), (y + h).min(ih));
        if out || x1 <= x0 || y1 <= y0 {
            return Err(self.err(
                entry,
                format!(
                    "bbox {b:?} lies outside image {} ({}x{}) by more than {BOX_TOLERANCE} pixel",
                    image.id, image.width, image.height
                ),
            ));
        }
        Ok([x0, y0, x1 - x0, y1 - y0])
    }

    fn bbox(&self, obj: &Map<String, Value>, at: &str) -> Result<[f64; 4]> {
        let v = self.field(obj, "bbox", at)?;
        let numbers: Option<Vec<f64>> = v
            .as_array()
            .filter(|a| a.len() == 4)
            .map(|a| a.iter().filter_map(Value::as_f64).collect());
        match numbers {
            Some(n) if n.len() == 4 => Ok([n[0], n[1], n[2], n[3]]),
            _ => Err(self.err(
                format!("{at}.bbox"),
                format!("expected [x, y, w, h] (4 numbers), found {}", show(v)),
            )),
        }
    }

    fn list<'v>(
        &self,
        top: &'v Map<String, Value>,
        key: &str,
        required: bool,
    ) -> Result<&'v [Value]> {
        match top.get(key) {
            None if !required => Ok(&[]),
            None => Err(self.err("top level", format!("missing key `{key}`"))),
            Some(Value::Array(a)) => Ok(a),
            Some(v) => Err(self.err(key, format!("expected a list, found {}", kind(v)))),
        }
    }

    fn object<'v>(&self, v: &'v Value, at: &str) -> Result<&'v Map<String, Value>> {
        v.as_object()
            .ok_or_else(|| self.err(at, format!("expected an object, found {}", kind(v))))
    }

    fn field<'v>(&self, obj: &'v Map<String, Value>, key: &str, at: &str) -> Result<&'v Value> {
        obj.get(key)
            .ok_or_else(|| self.err(at, format!("missing key `{key}`")))
    }

    /// An integer; a float with no fractional part (as some exporters write ids) is accepted too.
    fn integer(&self, obj: &Map<String, Value>, key: &str, at: &str) -> Result<i64> {
        let v = self.field(obj, key, at)?;
        let n = v.as_i64().or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        });
        n.ok_or_else(|| {
            self.err(
                format!("{at}.{key}"),
                format!("expected an integer, found {}", show(v)),
            )
        })
    }

    fn string(&self, obj: &Map<String, Value>, key: &str, at: &str) -> Result<String> {
        let v = self.field(obj, key, at)?;
        v.as_str().map(str::to_owned).ok_or_else(|| {
            self.err(
                format!("{at}.{key}"),
                format!("expected a string, found {}", show(v)),
            )
        })
    }
}

/// The kind of a JSON value, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A short rendering of a JSON value for messages (long values are cut).
fn show(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() <= 40 {
        text
    } else {
        format!(
            "{} ({}…)",
            kind(v),
            text.chars().take(30).collect::<String>()
        )
    }
}

/// Reading a data set: the file, its JSON, then the [`Parser`] (kept here so that `dataset.rs`, which only holds
/// the data, imports nothing from the parser).
impl CocoDataset {
    /// Reads a COCO detection JSON file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text, path)
    }

    /// Parses COCO detection JSON; `path` is only used to name the file in errors.
    pub fn from_json(text: &str, path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let value: Value = serde_json::from_str(text).map_err(|e| DataError::InvalidJson {
            path: path.clone(),
            line: e.line(),
            message: e.to_string(),
        })?;
        Parser { path: &path }.dataset(&value, path.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CocoDataset> {
        CocoDataset::from_json(text, "gt.json")
    }

    fn message(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("expected an error for {text}"),
            Err(e) => e.to_string(),
        }
    }

    const IMAGES: &str = r#""images": [
        {"id": 7, "file_name": "a.png", "width": 100, "height": 50},
        {"id": 3, "file_name": "b.png", "width": 20, "height": 20}]"#;
    const CATEGORIES: &str =
        r#""categories": [{"id": 9, "name": "dog"}, {"id": 2, "name": "cat"}]"#;

    fn with_annotations(annotations: &str) -> String {
        format!(r#"{{{IMAGES}, {CATEGORIES}, "annotations": [{annotations}]}}"#)
    }

    #[test]
    fn reads_images_categories_and_annotations() {
        let d = parse(&with_annotations(
            r#"{"id": 1, "image_id": 7, "category_id": 9, "bbox": [10, 5, 20, 10], "area": 150.5},
               {"id": 2, "image_id": 7, "category_id": 2, "bbox": [0, 0, 5, 5], "iscrowd": 1}"#,
        ))
        .unwrap();
        assert_eq!(d.images().len(), 2);
        assert_eq!(d.num_labels(), 2);
        // Labels follow the sorted category ids, not the file order.
        assert_eq!(d.label_names(), ["cat", "dog"]);
        assert_eq!(
            (d.label(2), d.label(9), d.label(5)),
            (Some(0), Some(1), None)
        );
        assert_eq!((d.category_id(1), d.category_id(2)), (Some(9), None));
        let a = &d.annotations()[0];
        assert_eq!((a.label, a.area, a.iscrowd), (1, 150.5, false));
        assert_eq!(a.bbox, [10.0, 5.0, 20.0, 10.0]);
        let b = &d.annotations()[1];
        assert_eq!((b.area, b.iscrowd), (25.0, true));
        assert_eq!(d.image_position(7), Some(0));
        assert_eq!(d.annotations_of(0).count(), 2);
        // An image without annotations is allowed: it has no objects.
        assert_eq!(d.annotations_of(1).count(), 0);
        assert_eq!(d.annotations_of(5).count(), 0);
    }

    #[test]
    fn annotations_are_optional() {
        let d = parse(&format!("{{{IMAGES}, {CATEGORIES}}}")).unwrap();
        assert!(d.annotations().is_empty());
    }

    #[test]
    fn unknown_image_and_category_are_named() {
        let m = message(&with_annotations(
            r#"{"id": 1, "image_id": 7, "category_id": 9, "bbox": [1, 1, 2, 2]},
               {"id": 17, "image_id": 99, "category_id": 9, "bbox": [1, 1, 2, 2]}"#,
        ));
        assert_eq!(m, "gt.json: annotation 17 (index 1): unknown image_id 99");
        let m = message(&with_annotations(
            r#"{"id": 4, "image_id": 7, "category_id": 5, "bbox": [1, 1, 2, 2]}"#,
        ));
        assert_eq!(m, "gt.json: annotation 4 (index 0): unknown category_id 5");
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let m = message(&with_annotations(
            r#"{"id": 1, "image_id": 7, "category_id": 9, "bbox": [1, 1, 2, 2]},
               {"id": 1, "image_id": 3, "category_id": 9, "bbox": [1, 1, 2, 2]}"#,
        ));
        assert!(
            m.contains("annotation 1 (index 1): duplicate annotation id"),
            "{m}"
        );
        let m = message(
            r#"{"images": [{"id": 1, "file_name": "a", "width": 1, "height": 1},
                           {"id": 1, "file_name": "b", "width": 1, "height": 1}], "categories": []}"#,
        );
        assert!(m.contains("image 1 (index 1): duplicate image id"), "{m}");
        let m = message(&format!(
            r#"{{{IMAGES}, "categories": [{{"id": 2, "name": "a"}}, {{"id": 2, "name": "b"}}]}}"#
        ));
        assert!(
            m.contains("category 2 (index 1): duplicate category id"),
            "{m}"
        );
    }

    #[test]
    fn degenerate_boxes_are_refused() {
        for b in ["[1, 1, 0, 2]", "[1, 1, 2, -3]"] {
            let m = message(&with_annotations(&format!(
                r#"{{"id": 5, "image_id": 3, "category_id": 2, "bbox": {b}}}"#
            )));
            assert!(
                m.starts_with("gt.json: annotation 5 (index 0): bbox"),
                "{m}"
            );
            assert!(m.contains("not positive"), "{m}");
        }
    }

    #[test]
    fn boxes_overshooting_by_a_pixel_are_clipped_and_further_refused() {
        // Image 3 is 20x20.
        let d = parse(&with_annotations(
            r#"{"id": 5, "image_id": 3, "category_id": 2, "bbox": [-0.5, 2, 10, 18.75]}"#,
        ))
        .unwrap();
        let a = &d.annotations()[0];
        assert_eq!(a.bbox, [0.0, 2.0, 9.5, 18.0]);
        assert_eq!(a.file_bbox, [-0.5, 2.0, 10.0, 18.75]);
        assert_eq!(a.area, 187.5);
        for b in ["[-1.5, 2, 10, 10]", "[5, 5, 16.5, 5]", "[20.2, 3, 0.5, 2]"] {
            let m = message(&with_annotations(&format!(
                r#"{{"id": 5, "image_id": 3, "category_id": 2, "bbox": {b}}}"#
            )));
            assert!(m.contains("lies outside image 3 (20x20)"), "{b}: {m}");
        }
    }

    #[test]
    fn malformed_json_names_the_path() {
        let m = message(&with_annotations(
            r#"{"id": 5, "image_id": 3, "category_id": 2, "bbox": "wide"}"#,
        ));
        assert_eq!(
            m,
            r#"gt.json: annotations[0].bbox: expected [x, y, w, h] (4 numbers), found "wide""#
        );
        let m = message(&with_annotations(
            r#"{"id": 5, "category_id": 2, "bbox": [1, 1, 1, 1]}"#,
        ));
        assert_eq!(m, "gt.json: annotations[0]: missing key `image_id`");
        let m = message(&with_annotations(
            r#"{"id": "x", "image_id": 3, "category_id": 2, "bbox": [1, 1, 1, 1]}"#,
        ));
        assert_eq!(
            m,
            r#"gt.json: annotations[0].id: expected an integer, found "x""#
        );
        let m = message(&with_annotations(
            r#"{"id": 1, "image_id": 3, "category_id": 2, "bbox": [1, 1, 1, 1], "iscrowd": 2}"#,
        ));
        assert_eq!(
            m,
            "gt.json: annotations[0].iscrowd: expected 0 or 1, found 2"
        );
        let m = message(r#"{"images": {}, "categories": []}"#);
        assert_eq!(m, "gt.json: images: expected a list, found an object");
        let m = message(r#"{"images": []}"#);
        assert_eq!(m, "gt.json: top level: missing key `categories`");
        let m = message("[1, 2]");
        assert!(
            m.starts_with("gt.json: top level: expected a JSON object"),
            "{m}"
        );
        let m = message(
            r#"{"images": [{"id": 1, "file_name": "a", "width": 0, "height": 3}], "categories": []}"#,
        );
        assert_eq!(
            m,
            "gt.json: image 1 (index 0): width must be a positive integer, got 0"
        );
        let m = message("{\"images\": [\n");
        assert!(m.starts_with("gt.json:2: not valid JSON"), "{m}");
    }

    #[test]
    fn missing_file_is_an_io_error() {
        let e = CocoDataset::load("/nonexistent/gt.json").unwrap_err();
        assert!(matches!(e, DataError::Io { .. }), "{e:?}");
    }
}
