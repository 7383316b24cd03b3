//! The types of a COCO detection file and the label mapping (see the parent module for the format).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// How far (in pixels) a box may stick out of its image and still be accepted (clipped to the image).
pub const BOX_TOLERANCE: f64 = 1.0;

/// One image of a COCO file.
#[derive(Clone, Debug, PartialEq)]
pub struct CocoImage {
    /// The image id.
    pub id: i64,
    /// The file name, relative to the image folder.
    pub file_name: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// One category of a COCO file.
#[derive(Clone, Debug, PartialEq)]
pub struct CocoCategory {
    /// The category id.
    pub id: i64,
    /// The category name.
    pub name: String,
}

/// One object annotation of a COCO file.
#[derive(Clone, Debug, PartialEq)]
pub struct CocoAnnotation {
    /// The annotation id.
    pub id: i64,
    /// The id of its image.
    pub image_id: i64,
    /// The id of its category.
    pub category_id: i64,
    /// The contiguous label of its category (its rank among the sorted category ids).
    pub label: usize,
    /// `[x, y, w, h]` in pixels, clipped to the image.
    pub bbox: [f64; 4],
    /// `[x, y, w, h]` as written in the file (what COCO evaluation scores).
    pub file_bbox: [f64; 4],
    /// The object's area (the file's `area`, else `w * h` of the written box); COCO's size ranges use it.
    pub area: f64,
    /// A crowd region (`iscrowd: 1`): evaluation ignores detections matched to it.
    pub iscrowd: bool,
}

/// A COCO detection file: images, their annotations and the categories, with the label mapping.
#[derive(Clone, Debug)]
pub struct CocoDataset {
    pub(super) path: PathBuf,
    pub(super) images: Vec<CocoImage>,
    pub(super) categories: Vec<CocoCategory>,
    pub(super) annotations: Vec<CocoAnnotation>,
    pub(super) image_index: HashMap<i64, usize>,
    pub(super) labels: HashMap<i64, usize>,
    pub(super) per_image: Vec<Vec<usize>>,
}

impl CocoDataset {
    /// The file this data set was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The images, in file order.
    pub fn images(&self) -> &[CocoImage] {
        &self.images
    }

    /// The categories sorted by id: category `categories()[label]` has contiguous label `label`.
    pub fn categories(&self) -> &[CocoCategory] {
        &self.categories
    }

    /// All annotations, in file order.
    pub fn annotations(&self) -> &[CocoAnnotation] {
        &self.annotations
    }

    /// The number of contiguous labels (categories).
    pub fn num_labels(&self) -> usize {
        self.categories.len()
    }

    /// The category names in label order.
    pub fn label_names(&self) -> Vec<&str> {
        self.categories.iter().map(|c| c.name.as_str()).collect()
    }

    /// The contiguous label of a category id.
    pub fn label(&self, category_id: i64) -> Option<usize> {
        self.labels.get(&category_id).copied()
    }

    /// The category id of a contiguous label.
    pub fn category_id(&self, label: usize) -> Option<i64> {
        self.categories.get(label).map(|c| c.id)
    }

    /// The position in [`images`](Self::images) of an image id.
    pub fn image_position(&self, image_id: i64) -> Option<usize> {
        self.image_index.get(&image_id).copied()
    }

    /// The annotations of the image at `position` in [`images`](Self::images), in file order (none for a
    /// position out of range).
    pub fn annotations_of(&self, position: usize) -> impl Iterator<Item = &CocoAnnotation> + '_ {
        self.per_image
            .get(position)
            .into_iter()
            .flatten()
            .map(|&i| &self.annotations[i])
    }
}
