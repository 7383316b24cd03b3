//! The objects of one image: annotations as given (COCO `[x, y, w, h]`) and as corner boxes in pixels, which the
//! processor makes and the augmentations move with the pixels.

/// One object of a COCO annotation, as the processor takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectAnnotation {
    /// `[x, y, width, height]` in pixels of the original image.
    pub bbox: [f64; 4],
    /// The class label, kept as given (transformers passes the COCO `category_id` through).
    pub class_label: i64,
    /// COCO's `area` (kept, scaled with the image; not recomputed from the clipped box, as transformers).
    pub area: f64,
    /// Crowd objects are dropped, as transformers does.
    pub iscrowd: bool,
}

impl ObjectAnnotation {
    /// A non-crowd object whose area is `width * height`.
    pub fn new(bbox: [f64; 4], class_label: i64) -> Self {
        ObjectAnnotation {
            bbox,
            class_label,
            area: bbox[2] * bbox[3],
            iscrowd: false,
        }
    }
}

/// The objects of one image as corner boxes `(x0, y0, x1, y1)` in pixels of that image: what the annotation step
/// gives and what augmentations transform together with the pixels.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PixelObjects {
    /// `[n]` corner boxes.
    pub boxes: Vec<[f32; 4]>,
    /// `[n]` class labels.
    pub class_labels: Vec<i64>,
    /// `[n]` areas.
    pub area: Vec<f32>,
}

impl PixelObjects {
    /// `prepare_coco_detection_annotation`: crowd objects dropped, `[x, y, w, h]` to corners (in `f32`), clipped to
    /// the `width` x `height` image, and boxes left with no width or height dropped.
    pub fn from_coco(objects: &[ObjectAnnotation], width: usize, height: usize) -> Self {
        let mut out = PixelObjects::default();
        for o in objects.iter().filter(|o| !o.iscrowd) {
            let [x, y, w, h] = o.bbox.map(|v| v as f32);
            let (x0, x1) = (x.clamp(0.0, width as f32), (x + w).clamp(0.0, width as f32));
            let (y0, y1) = (
                y.clamp(0.0, height as f32),
                (y + h).clamp(0.0, height as f32),
            );
            // `clip` lets NaN through and the comparison then drops the box, as numpy's would.
            if x1 > x0 && y1 > y0 {
                out.push([x0, y0, x1, y1], o.class_label, o.area as f32);
            }
        }
        out
    }

    /// The number of objects.
    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    /// Whether there is no object.
    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }

    pub(super) fn push(&mut self, b: [f32; 4], class_label: i64, area: f32) {
        self.boxes.push(b);
        self.class_labels.push(class_label);
        self.area.push(area);
    }
}
