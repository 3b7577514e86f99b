//! Driver-level pieces of the CUDA backend: page-locked host buffers, the loaded kernels, the
//! process-wide lock around backend set-up and teardown, and error mapping.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction};

use super::kernels::{self, PtxSet};
use super::layers::Kernel;
use crate::error::{Error, Result};

/// dst = src, a large copy (a download into a slot, a frame into pinned staging) by the rayon
/// threads: one thread's memcpy does not reach the memory bandwidth.
pub(super) fn par_copy<T: Copy + Send + Sync>(dst: &mut [T], src: &[T]) {
    use rayon::prelude::*;
    const CHUNK_BYTES: usize = 1 << 18;
    let chunk = (CHUNK_BYTES / std::mem::size_of::<T>().max(1)).max(1);
    if dst.len() <= 2 * chunk {
        dst.copy_from_slice(src);
    } else {
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| d.copy_from_slice(s));
    }
}

pub(super) fn drv<E: std::fmt::Debug>(what: &str) -> impl FnOnce(E) -> Error + '_ {
    move |e| Error::Backend(format!("CUDA {what}: {e:?}"))
}

/// The primary context of CUDA device `device_id` (retained), without panicking where the
/// driver does.
pub(super) fn primary_context(device_id: usize) -> Result<Arc<CudaContext>> {
    std::panic::catch_unwind(|| CudaContext::new(device_id))
        .map_err(|_| Error::Backend("creating the CUDA context panicked".into()))?
        .map_err(drv("context"))
}

/// Building and dropping a backend (context, allocations, module loads, cuBLAS handles, pinned
/// memory, graph capture) happen one backend at a time in the process: a device-synchronising
/// call of another thread (cuMemFreeHost, a module unload, cuBLAS's workspace free) during a
/// graph capture invalidates the capture. Frames do not take this lock.
static SETUP_BUSY: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
static SETUP_FREE: std::sync::Condvar = std::sync::Condvar::new();

/// Holds the setup lock until dropped; may move between threads (a backend carries it while it
/// is being dropped).
pub(super) struct SetupGuard;

pub(super) fn setup_guard() -> SetupGuard {
    let mut busy = SETUP_BUSY.lock().unwrap_or_else(|e| e.into_inner());
    while *busy {
        busy = SETUP_FREE.wait(busy).unwrap_or_else(|e| e.into_inner());
    }
    *busy = true;
    SetupGuard
}

impl Drop for SetupGuard {
    fn drop(&mut self) {
        *SETUP_BUSY.lock().unwrap_or_else(|e| e.into_inner()) = false;
        SETUP_FREE.notify_one();
    }
}

/// Page-locked host memory (not write-combined: the host also reads it back), allocated once per
/// backend, so per-frame copies are true async DMA with no driver staging and no allocation.
/// Portable: pinned for every context of the process, as frame memory that one backend
/// allocated and another uploads from (`pinned_frames`) needs.
pub(super) struct Pinned<T: Copy> {
    ctx: Arc<CudaContext>,
    ptr: *mut T,
    pub(super) len: usize,
}

// SAFETY: the buffer is owned memory like a Box<[T]>; it is only touched through &self / &mut self.
unsafe impl<T: Copy + Send> Send for Pinned<T> {}

impl<T: Copy> Pinned<T> {
    pub(super) fn new(ctx: &Arc<CudaContext>, len: usize) -> Result<Self> {
        let len = len.max(1);
        ctx.bind_to_thread().map_err(drv("bind"))?;
        // The caller (backend construction) holds the setup guard.
        // SAFETY: a plain host allocation of len elements, zeroed below before any read.
        let ptr = unsafe {
            cudarc::driver::result::malloc_host(
                len * std::mem::size_of::<T>(),
                cudarc::driver::sys::CU_MEMHOSTALLOC_PORTABLE,
            )
        }
        .map_err(drv("pinned alloc"))? as *mut T;
        // SAFETY: freshly allocated, len * size_of::<T>() bytes; T is plain data (u8, u32, f32).
        unsafe { std::ptr::write_bytes(ptr as *mut u8, 0, len * std::mem::size_of::<T>()) };
        Ok(Pinned {
            ctx: ctx.clone(),
            ptr,
            len,
        })
    }

    pub(super) fn as_slice(&self) -> &[T] {
        // SAFETY: ptr addresses len initialised elements for the life of self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub(super) fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as above, and &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl<T: Copy> Drop for Pinned<T> {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        // The owning backend holds the setup guard while its fields drop.
        // SAFETY: allocated by malloc_host in `new`; no copy is in flight (the owner synchronises
        // its stream before dropping, and every async copy is followed by a synchronize).
        let _ = unsafe { cudarc::driver::result::free_host(self.ptr as *mut std::ffi::c_void) };
    }
}

/// The loaded kernels, indexed like [`Kernel::ALL`].
pub(super) struct Kernels(Vec<CudaFunction>);

impl Kernels {
    pub(super) fn load(ctx: &Arc<CudaContext>, ptx: &PtxSet) -> Result<Self> {
        let mut funcs: Vec<(&'static str, CudaFunction)> = Vec::new();
        for (file, text) in ptx {
            let src = kernels::SOURCES
                .iter()
                .find(|s| s.file == *file)
                .ok_or_else(|| Error::Backend(format!("PTX for unknown kernel file {file}")))?;
            let module = ctx
                .load_module(cudarc::nvrtc::Ptx::from_src(text.clone()))
                .map_err(drv("module load"))?;
            for &name in src.entries {
                funcs.push((name, module.load_function(name).map_err(drv(name))?));
            }
        }
        let all = Kernel::ALL
            .iter()
            .map(|k| {
                let i = funcs
                    .iter()
                    .position(|(n, _)| *n == k.entry())
                    .ok_or_else(|| {
                        Error::Backend(format!("kernel {} missing from the PTX", k.entry()))
                    })?;
                Ok(funcs[i].1.clone())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Kernels(all))
    }

    pub(super) fn get(&self, k: Kernel) -> &CudaFunction {
        // Loaded in the order of Kernel::ALL, which is the enum's order (layers.rs test).
        &self.0[k as usize]
    }
}
