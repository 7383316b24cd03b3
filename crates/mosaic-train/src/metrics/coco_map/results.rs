//! COCO results files: a JSON list of `{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`.

use std::path::Path;

use mosaic_data::CocoDataset;
use serde_json::{Map, Value};

use crate::metrics::MetricsError;

/// One detection, as a COCO results file holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct CocoDetection {
    /// The id of the image (one of the ground truth's).
    pub image_id: i64,
    /// The category id (one of the ground truth's; not the contiguous label).
    pub category_id: i64,
    /// `[x, y, w, h]` in pixels.
    pub bbox: [f64; 4],
    /// The confidence; detections are ranked by it.
    pub score: f64,
}

/// Reads a COCO results file and checks it against the ground truth (every image and category known).
pub fn load_results(path: &Path, gt: &CocoDataset) -> Result<Vec<CocoDetection>, MetricsError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| results_error(path, "file", format!("cannot read: {e}")))?;
    parse_results(&text, path, gt)
}

/// Parses the text of a COCO results file and checks it against the ground truth; `path` names the file in errors.
pub fn parse_results(
    text: &str,
    path: &Path,
    gt: &CocoDataset,
) -> Result<Vec<CocoDetection>, MetricsError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        results_error(
            path,
            format!("line {} column {}", e.line(), e.column()),
            format!("not valid JSON: {e}"),
        )
    })?;
    let Value::Array(entries) = value else {
        return Err(results_error(
            path,
            "top level",
            format!(
                "a COCO results file is a JSON list of detections, found {}",
                kind(&value)
            ),
        ));
    };
    let mut detections = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("results[{i}]");
        let detection = parse_entry(entry).map_err(|message| results_error(path, &at, message))?;
        check_detection(&detection, gt).map_err(|message| results_error(path, &at, message))?;
        detections.push(detection);
    }
    Ok(detections)
}

fn parse_entry(entry: &Value) -> Result<CocoDetection, String> {
    let obj = entry
        .as_object()
        .ok_or_else(|| format!("expected an object, found {}", kind(entry)))?;
    let image_id = integer(obj, "image_id")?;
    let category_id = integer(obj, "category_id")?;
    let bbox = field(obj, "bbox")?;
    let numbers: Option<Vec<f64>> = bbox
        .as_array()
        .filter(|a| a.len() == 4)
        .map(|a| a.iter().filter_map(Value::as_f64).collect());
    let bbox = match numbers {
        Some(n) if n.len() == 4 => [n[0], n[1], n[2], n[3]],
        _ => {
            return Err(format!(
                "`bbox` should be [x, y, w, h] (4 numbers), found {}",
                show(bbox)
            ));
        }
    };
    let score = field(obj, "score")?;
    let score = score
        .as_f64()
        .ok_or_else(|| format!("`score` should be a number, found {}", show(score)))?;
    Ok(CocoDetection {
        image_id,
        category_id,
        bbox,
        score,
    })
}

/// Checks one detection against the ground truth; the message says what is wrong.
pub(super) fn check_detection(d: &CocoDetection, gt: &CocoDataset) -> Result<(), String> {
    if gt.image_position(d.image_id).is_none() {
        return Err(format!(
            "unknown image_id {} (not an image of {})",
            d.image_id,
            gt.path().display()
        ));
    }
    if gt.label(d.category_id).is_none() {
        return Err(format!(
            "unknown category_id {} (not a category of {})",
            d.category_id,
            gt.path().display()
        ));
    }
    if !d.score.is_finite() || d.bbox.iter().any(|v| !v.is_finite()) {
        return Err("`bbox` and `score` must be finite numbers".into());
    }
    if d.bbox[2] < 0.0 || d.bbox[3] < 0.0 {
        return Err(format!("bbox {:?} has a negative width or height", d.bbox));
    }
    Ok(())
}

fn results_error(
    path: &Path,
    entry: impl Into<String>,
    message: impl Into<String>,
) -> MetricsError {
    MetricsError::CocoResults {
        path: path.to_path_buf(),
        entry: entry.into(),
        message: message.into(),
    }
}

fn field<'v>(obj: &'v Map<String, Value>, key: &str) -> Result<&'v Value, String> {
    obj.get(key).ok_or_else(|| format!("missing key `{key}`"))
}

/// An integer id; a float with no fractional part (as some exporters write ids) is accepted too.
fn integer(obj: &Map<String, Value>, key: &str) -> Result<i64, String> {
    let v = field(obj, key)?;
    v.as_i64()
        .or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        })
        .ok_or_else(|| format!("`{key}` should be an integer, found {}", show(v)))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn gt() -> CocoDataset {
        CocoDataset::from_json(
            r#"{"images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}],
                "categories": [{"id": 3, "name": "dot"}]}"#,
            "gt.json",
        )
        .unwrap()
    }

    fn message(text: &str) -> String {
        parse_results(text, Path::new("res.json"), &gt())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn parses_a_results_list() {
        let d = parse_results(
            r#"[{"image_id": 1, "category_id": 3, "bbox": [1, 2, 3.5, 4], "score": 0.9, "extra": null}]"#,
            Path::new("res.json"),
            &gt(),
        )
        .unwrap();
        assert_eq!(
            d,
            [CocoDetection {
                image_id: 1,
                category_id: 3,
                bbox: [1.0, 2.0, 3.5, 4.0],
                score: 0.9
            }]
        );
        assert!(
            parse_results("[]", Path::new("res.json"), &gt())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn bad_entries_are_named() {
        assert_eq!(
            message(r#"{"image_id": 1}"#),
            "res.json: top level: a COCO results file is a JSON list of detections, found an object"
        );
        assert_eq!(
            message(
                r#"[{"image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 4], "score": 1},
                    {"image_id": 1, "bbox": [1, 2, 3, 4], "score": 1}]"#
            ),
            "res.json: results[1]: missing key `category_id`"
        );
        assert_eq!(
            message(r#"[{"image_id": 9, "category_id": 3, "bbox": [1, 2, 3, 4], "score": 1}]"#),
            "res.json: results[0]: unknown image_id 9 (not an image of gt.json)"
        );
        assert_eq!(
            message(r#"[{"image_id": 1, "category_id": 4, "bbox": [1, 2, 3, 4], "score": 1}]"#),
            "res.json: results[0]: unknown category_id 4 (not a category of gt.json)"
        );
        assert_eq!(
            message(r#"[{"image_id": 1, "category_id": 3, "bbox": [1, 2, 3], "score": 1}]"#),
            "res.json: results[0]: `bbox` should be [x, y, w, h] (4 numbers), found [1,2,3]"
        );
        assert_eq!(
            message(
                r#"[{"image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 4], "score": "high"}]"#
            ),
            r#"res.json: results[0]: `score` should be a number, found "high""#
        );
        assert_eq!(
            message(r#"[{"image_id": 1, "category_id": 3, "bbox": [1, 2, -3, 4], "score": 1}]"#),
            "res.json: results[0]: bbox [1.0, 2.0, -3.0, 4.0] has a negative width or height"
        );
        assert_eq!(
            message("[3]"),
            "res.json: results[0]: expected an object, found a number"
        );
        assert!(message("[{").starts_with("res.json: line 1 column 2: not valid JSON"));
    }
}
