//! The process's plans, one per model file and input size: engines that run the same model
//! (several cameras, the branches of a tee) share its weights and its import instead of holding
//! a copy each.
//!
//! A file is the same file while its canonical path, length, modification and status change
//! times, device and inode are. A plan lives as long as some engine holds it: once the last one is
//! dropped, the next engine imports the file again. A shared plan names its file as the first
//! engine spelled the path (`Plan::model_path`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
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
    /// Another engine of the process already held `plan`: nothing was imported.
    pub shared: bool,
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
    if let Some(held) = held(&file, path, input_size, probe)? {
        return Ok(held);
    }
    // One import of a file at a time: an engine that starts beside another on the same model
    // waits for its plan instead of importing a second copy. Other files import meanwhile.
    let slot = store().import_slot(&file);
    let _importing = slot.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(held) = held(&file, path, input_size, probe)? {
        return Ok(held);
    }
    let (loaded, declared) = import(path, input_size, probe)?;
    // A file that changed while it was read is not kept: the next engine reads it again.
    if FileId::of(path).as_ref() == Some(&file) {
        let mut store = store();
        store.declared.retain(|(f, _)| f.path != file.path);
        store.declared.push((file.clone(), declared));
        let dims = (loaded.plan.input_w, loaded.plan.input_h);
        store.plans.push((file, dims, Arc::downgrade(&loaded.plan)));
    }
    Ok(loaded)
}

/// The plan some engine holds for `file` at the size asked for, if any.
fn held(
    file: &FileId,
    path: &Path,
    input_size: Option<(usize, usize)>,
    probe: Option<(usize, usize)>,
) -> Result<Option<Loaded>> {
    let mut store = store();
    store.plans.retain(|(_, _, plan)| plan.strong_count() > 0);
    store
        .importing
        .retain(|(_, slot)| Arc::strong_count(slot) > 1);
    let Some(declared) = store.declared(file) else {
        return Ok(None);
    };
    let (asked, follows_frames) = asked(declared, input_size, probe);
    let dims = input_dims(path, declared, asked)?;
    Ok(store.held(file, dims).map(|plan| Loaded {
        plan,
        follows_frames,
        shared: true,
    }))
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
            shared: false,
        },
        (w, h),
    ))
}

/// The files the store has read, with the input (width, height) each declares; the plans
/// engines hold, by file and input size; a lock per file being imported.
struct Store {
    declared: Vec<(FileId, DeclaredDims)>,
    plans: Vec<(FileId, (usize, usize), Weak<Plan>)>,
    importing: Vec<(FileId, Arc<Mutex<()>>)>,
}

fn store() -> MutexGuard<'static, Store> {
    STORE.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Store {
    /// The lock that imports of `file` take.
    fn import_slot(&mut self, file: &FileId) -> Arc<Mutex<()>> {
        if let Some((_, slot)) = self.importing.iter().find(|(f, _)| f == file) {
            return slot.clone();
        }
        let slot = Arc::new(Mutex::new(()));
        self.importing.push((file.clone(), slot.clone()));
        slot
    }

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
    importing: Vec::new(),
});

/// A model file as the store tells files apart.
#[derive(Clone, PartialEq, Eq)]
struct FileId {
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
    /// Where the platform has them: device and inode (a file replaced by a rename is another
    /// file) and the status change time (which no copy or `touch` can set back).
    unix: Option<(u64, u64, i64, i64)>,
}

impl FileId {
    fn of(path: &Path) -> Option<Self> {
        let path = path.canonicalize().ok()?;
        let meta = std::fs::metadata(&path).ok()?;
        #[cfg(unix)]
        let unix = {
            use std::os::unix::fs::MetadataExt;
            Some((meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec()))
        };
        #[cfg(not(unix))]
        let unix = None;
        Some(FileId {
            len: meta.len(),
            modified: meta.modified().ok(),
            unix,
            path,
        })
    }
}
