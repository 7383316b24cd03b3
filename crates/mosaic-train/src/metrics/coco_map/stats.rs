//! pycocotools' twelve summary figures (`COCOeval.stats`) and their `summarize()` wording.

use serde::Serialize;

/// The twelve figures of `COCOeval.summarize()` for boxes, in `stats` order; -1 where nothing is defined.
///
/// Serializes as `{"AP": ..., "AP50": ..., ..., "ARl": ...}` in this order.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CocoStats {
    /// AP @[IoU=.50:.95, all areas, 100 detections].
    #[serde(rename = "AP")]
    pub ap: f64,
    /// AP @[IoU=.50].
    #[serde(rename = "AP50")]
    pub ap50: f64,
    /// AP @[IoU=.75].
    #[serde(rename = "AP75")]
    pub ap75: f64,
    /// AP of small objects (area < 32²).
    #[serde(rename = "APs")]
    pub ap_small: f64,
    /// AP of medium objects (32² to 96²).
    #[serde(rename = "APm")]
    pub ap_medium: f64,
    /// AP of large objects (area > 96²).
    #[serde(rename = "APl")]
    pub ap_large: f64,
    /// AR with 1 detection an image.
    #[serde(rename = "AR1")]
    pub ar1: f64,
    /// AR with 10 detections an image.
    #[serde(rename = "AR10")]
    pub ar10: f64,
    /// AR with 100 detections an image.
    #[serde(rename = "AR100")]
    pub ar100: f64,
    /// AR of small objects.
    #[serde(rename = "ARs")]
    pub ar_small: f64,
    /// AR of medium objects.
    #[serde(rename = "ARm")]
    pub ar_medium: f64,
    /// AR of large objects.
    #[serde(rename = "ARl")]
    pub ar_large: f64,
}

/// For each figure: (is AP, IoU label, area label, maxDets), as `summarize()` prints them.
const LINES: [(bool, &str, &str, usize); 12] = [
    (true, "0.50:0.95", "all", 100),
    (true, "0.50", "all", 100),
    (true, "0.75", "all", 100),
    (true, "0.50:0.95", "small", 100),
    (true, "0.50:0.95", "medium", 100),
    (true, "0.50:0.95", "large", 100),
    (false, "0.50:0.95", "all", 1),
    (false, "0.50:0.95", "all", 10),
    (false, "0.50:0.95", "all", 100),
    (false, "0.50:0.95", "small", 100),
    (false, "0.50:0.95", "medium", 100),
    (false, "0.50:0.95", "large", 100),
];

impl CocoStats {
    /// The short names, in `stats` order (the JSON keys).
    pub const NAMES: [&'static str; 12] = [
        "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
    ];

    /// The figures in `stats` order.
    pub fn values(&self) -> [f64; 12] {
        [
            self.ap,
            self.ap50,
            self.ap75,
            self.ap_small,
            self.ap_medium,
            self.ap_large,
            self.ar1,
            self.ar10,
            self.ar100,
            self.ar_small,
            self.ar_medium,
            self.ar_large,
        ]
    }

    /// The twelve lines `COCOeval.summarize()` prints, e.g.
    /// ` Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.504`.
    pub fn summary_lines(&self) -> Vec<String> {
        LINES
            .iter()
            .zip(self.values())
            .map(|(&(is_ap, iou, area, max_dets), value)| {
                let (title, kind) = if is_ap {
                    ("Average Precision", "(AP)")
                } else {
                    ("Average Recall", "(AR)")
                };
                format!(
                    " {title:<18} {kind} @[ IoU={iou:<9} | area={area:>6} | maxDets={max_dets:>3} ] = {value:.3}"
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_json_follow_pycocotools() {
        let mut s = CocoStats {
            ap: 0.5037,
            ap50: 1.0,
            ap75: -1.0,
            ap_small: 0.0,
            ap_medium: 0.0,
            ap_large: 0.0,
            ar1: 0.0,
            ar10: 0.0,
            ar100: 0.0,
            ar_small: 0.0,
            ar_medium: 0.0,
            ar_large: 0.25,
        };
        let lines = s.summary_lines();
        assert_eq!(
            lines[0],
            " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.504"
        );
        assert_eq!(
            lines[2],
            " Average Precision  (AP) @[ IoU=0.75      | area=   all | maxDets=100 ] = -1.000"
        );
        assert_eq!(
            lines[6],
            " Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ] = 0.000"
        );
        assert_eq!(
            lines[10],
            " Average Recall     (AR) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ] = 0.000"
        );
        s.ap = 0.5;
        let json = serde_json::to_string(&s).unwrap();
        assert!(
            json.starts_with(r#"{"AP":0.5,"AP50":1.0,"AP75":-1.0,"APs":0.0"#),
            "{json}"
        );
        assert!(json.ends_with(r#""ARl":0.25}"#), "{json}");
    }
}
