//! COCO detection files: `images`, `annotations` and `categories` as the COCO format (and pycocotools) has them.
//!
//! * `images`: `id`, `file_name`, `width`, `height` (positive integers).
//! * `annotations` (optional: a file of images only has no objects): `id`, `image_id`, `category_id`,
//!   `bbox` as `[x, y, w, h]` in pixels, `area` (when absent, `w * h`), `iscrowd` (0 or 1, default 0). Other keys
//!   (`segmentation`, …) are ignored.
//! * `categories`: `id`, `name`. Category ids are mapped to contiguous labels `0..K` **sorted by id**, so labels do
//!   not depend on the order of the file ([`CocoDataset::label`], [`CocoDataset::category_id`]).
//!
//! An image without annotations is allowed: it has no objects. Everything else that is inconsistent is an error
//! ([`DataError::Coco`](crate::DataError::Coco)) naming the file and the entry, e.g. `annotation 17 (index 3):
//! unknown image_id 99`: an annotation for an unknown image or category, a duplicate image, annotation or category
//! id, a box whose width or height is not positive, and a box outside its image.
//!
//! **Boxes outside the image.** Annotation tools round polygon vertices, so real COCO files hold boxes that
//! overshoot the image border by a fraction of a pixel. A box that sticks out by at most
//! [`BOX_TOLERANCE`] (one pixel) on any side is clipped to the image for training ([`CocoAnnotation::bbox`]); one
//! that sticks out further, or that lies wholly in that margin, is refused. The box as written is kept too
//! ([`CocoAnnotation::file_bbox`]): COCO evaluation scores that one, as pycocotools does.

mod dataset;
mod parse;

pub use dataset::{BOX_TOLERANCE, CocoAnnotation, CocoCategory, CocoDataset, CocoImage};
