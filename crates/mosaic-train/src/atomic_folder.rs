//! Replacing a whole folder (a checkpoint) at once: it is written beside its final place, then swapped in, so a
//! crash never leaves a half-written folder where a complete one was.

use std::path::Path;

use crate::error::{Result, TrainError};

/// Runs `write` on a staging folder next to `dir`, then swaps it in for `dir` (the old folder, if any, is moved
/// aside first and dropped last; it is put back when the swap fails). A failed `write` leaves `dir` untouched.
pub fn write_folder_atomically(dir: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| TrainError::file(parent, e))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    let staging = parent.join(format!(".{name}.{}.partial", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    if let Err(e) = write(&staging) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    // Swap: move the old folder aside, the new one in, then drop the old one.
    let old = parent.join(format!(".{name}.{}.old", std::process::id()));
    let had_old = dir.exists();
    if had_old {
        std::fs::rename(dir, &old).map_err(|e| TrainError::file(dir, e))?;
    }
    if let Err(e) = std::fs::rename(&staging, dir) {
        if had_old {
            let _ = std::fs::rename(&old, dir);
        }
        let _ = std::fs::remove_dir_all(&staging);
        return Err(TrainError::file(dir, e));
    }
    if had_old {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(())
}
