//! The process's plans, one per model file and input size: engines that run the same model
//! (several cameras, the branches of a tee) share its weights and its import instead of holding
//! a copy each.
//!
//! A file is the same file while its canonical path, length, modification time and inode are. A plan
//! lives as long as some engine holds it: once the last one is dropped, the next engine imports
//! the file again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::SystemTime;

use super::import::{declared_input, input_dims, translate, DeclaredDims, ImportOptions};
use super::{onnx, Plan};
use crate::error::Result;

/// A plan for a model file.
pub struct Loaded {
    pub plan: Arc<Plan>,
    /// The model's spatial input dims are symbolic and no input size was asked for: `plan` was
    /// imported at the probe size, to check the model, and the input size is the caller's to pick
    /// (from the frames).
    pub follows_frames: bool,
}

/// The plan of `path` at `input_size` ([`ImportOptions::input_size`]): the one some engine of
/// this process already holds, else imported now. Errors are the import's.
pub fn plan(path: &Path, input_size: Option<(usize, usize)>) -> Result<Arc<Plan>> {
    load(path, input_size, None).map(|l| l.plan)
}

/// [`plan`], except that a model with symbolic input dims and no `input_size` is imported at
/// `probe` instead of failing (see [`Loaded::follows_frames`]).
pub fn load(
    path: &Path,
    input_size: Option<(usize, usize)>,
    probe: Option<(usize, usize)>,
) -> Result<Loaded> {
    let Some(file) = FileId::of(path) else {
        // Unreadable: importing names the file and the reason.
        return import(path, input_size, probe).map(|(loaded, _)| loaded);
    };
    // Held through the import: an engine that starts beside another on the same model waits for
    // its plan instead of importing a second copy.
    let mut store = STORE.lock().unwrap_or_else(PoisonError::into_inner);
    store.plans.retain(|(_, _, plan)| plan.strong_count() > 0);
    if let Some(declared) = store.declared(&file) {
        let (asked, follows_frames) = asked(declared, input_size, probe);
        let dims = input_dims(path, declared, asked)?;
        if let Some(plan) = store.held(&file, dims) {
            return Ok(Loaded {
                plan,
                follows_frames,
            });
        }
    }
    let (loaded, declared) = import(path, input_size, probe)?;
    let dims = (loaded.plan.input_w, loaded.plan.input_h);
    store.declared.retain(|(f, _)| f.path != file.path);
    store.declared.push((file.clone(), declared));
    store.plans.push((file, dims, Arc::downgrade(&loaded.plan)));
    Ok(loaded)
}

/// The input size to import at for the (width, height) a file declares, and whether that is
/// the probe's (symbolic dims, no size asked for).
fn asked(
    (w, h): DeclaredDims,
    input_size: Option<(usize, usize)>,
    probe: Option<(usize, usize)>,
) -> (Option<(usize, usize)>, bool) {
    let follows_frames = (w.is_none() || h.is_none()) && input_size.is_none() && probe.is_some();
    (
        if follows_frames { probe } else { input_size },
        follows_frames,
    )
}

/// Imports `path` as [`load`] does; also returns the (width, height) the file declares.
fn import(
    path: &Path,
    input_size: Option<(usize, usize)>,
    probe: Option<(usize, usize)>,
) -> Result<(Loaded, DeclaredDims)> {
    let graph = onnx::load(path)?;
    let (_, _, h, w) = declared_input(&graph)?;
    let (input_size, follows_frames) = asked((w, h), input_size, probe);
    let plan = Arc::new(translate(graph, &ImportOptions { input_size })?);
    Ok((
        Loaded {
            plan,
            follows_frames,
        },
        (w, h),
    ))
}

/// The files the store has read, with the input (width, height) each declares, and the plans
/// engines hold, by file and input size.
struct Store {
    declared: Vec<(FileId, DeclaredDims)>,
    plans: Vec<(FileId, (usize, usize), Weak<Plan>)>,
}

impl Store {
    fn declared(&self, file: &FileId) -> Option<DeclaredDims> {
        self.declared
            .iter()
            .find(|(f, _)| f == file)
            .map(|&(_, d)| d)
    }

    fn held(&self, file: &FileId, dims: (usize, usize)) -> Option<Arc<Plan>> {
        self.plans
            .iter()
            .filter(|(f, d, _)| f == file && *d == dims)
            .find_map(|(_, _, plan)| plan.upgrade())
    }
}

static STORE: Mutex<Store> = Mutex::new(Store {
    declared: Vec::new(),
    plans: Vec::new(),
});

/// A model file as the store tells files apart.
#[derive(Clone, PartialEq, Eq)]
struct FileId {
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
    /// Where the platform has them: a file replaced by a rename is another file.
    inode: u64,
}

impl FileId {
    fn of(path: &Path) -> Option<Self> {
        let path = path.canonicalize().ok()?;
        let meta = std::fs::metadata(&path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Some(FileId {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
            path,
        })
    }
}
