//! Page-locked frame memory for the element's buffer pool (see `backend::frame_memory`): a frame
//! that upstream wrote into one of these blocks is uploaded straight from it.
//!
//! Blocks are not freed when their buffer is: a GstBufferPool drops a buffer whose memory is still
//! shared when it comes back (a `tee` upstream), and freeing page-locked memory synchronises the
//! whole device, stalling every camera of the process. A dropped block goes back to its
//! allocator's free list instead, and the next request of its size takes it. The blocks of all
//! allocators together stay under a budget ([`budget_bytes`]); past it, requests are refused and
//! the pool hands out ordinary memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::{sys, CudaContext};

use super::driver::{drv, setup_guard};
use crate::backend::frame_memory::{FrameBlock, FrameBytes, FrameMemory, LiveBlocks};
use crate::error::{Error, Result};

/// Every block of this process, in use or free, whichever backend's context allocated it (the
/// allocation is portable: pinned for every context).
pub(super) static PINNED_FRAMES: LiveBlocks = LiveBlocks::new();

/// Bytes of all blocks of the process.
static PINNED_BYTES: AtomicUsize = AtomicUsize::new(0);

/// The most bytes of frame memory the process page-locks: `REGIONDROP_CUDA_FRAME_POOL_MB`, else
/// 1 GiB (about 170 1080p RGB frames).
fn budget_bytes() -> usize {
    std::env::var("REGIONDROP_CUDA_FRAME_POOL_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(1 << 30, |mb| mb << 20)
}

/// One allocator's blocks not in use, and the context that allocated them.
struct FreeBlocks {
    ctx: Arc<CudaContext>,
    free: Mutex<Vec<(usize, usize)>>,
}

impl FreeBlocks {
    /// A free block of exactly `len` bytes, taken off the list.
    fn take(&self, len: usize) -> Option<usize> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let i = free.iter().position(|&(_, l)| l == len)?;
        Some(free.swap_remove(i).0)
    }

    fn put(&self, ptr: usize, len: usize) {
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((ptr, len));
    }
}

impl Drop for FreeBlocks {
    /// The allocator and every block of it are gone: the free blocks are freed for good.
    fn drop(&mut self) {
        let free = std::mem::take(self.free.get_mut().unwrap_or_else(|e| e.into_inner()));
        if free.is_empty() {
            return;
        }
        // cuMemFreeHost synchronises the device: not during another backend's graph capture.
        let _setup = setup_guard();
        let _ = self.ctx.bind_to_thread();
        for (ptr, len) in free {
            PINNED_FRAMES.remove(ptr);
            PINNED_BYTES.fetch_sub(len, Ordering::Relaxed);
            // SAFETY: allocated by malloc_host in `memory` and no longer in use: a block goes
            // on the free list only when its buffer is gone, and a backend reads a block only
            // while the element holds its buffer (and synchronises before giving it back).
            let _ = unsafe { cudarc::driver::result::free_host(ptr as *mut std::ffi::c_void) };
        }
    }
}

struct PinnedFrame {
    /// Where the block goes back to.
    home: Arc<FreeBlocks>,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: owned memory like a Box<[u8]>, touched only through &self / &mut self.
unsafe impl Send for PinnedFrame {}

impl FrameBytes for PinnedFrame {
    fn bytes(&self) -> &[u8] {
        // SAFETY: ptr addresses len initialised bytes for the life of self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above; &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for PinnedFrame {
    fn drop(&mut self) {
        self.home.put(self.ptr as usize, self.len);
    }
}

/// An allocator of page-locked blocks in `ctx`'s process, each one registered while it lives.
pub(super) fn memory(ctx: Arc<CudaContext>) -> FrameMemory {
    let home = Arc::new(FreeBlocks {
        ctx,
        free: Mutex::new(Vec::new()),
    });
    Arc::new(move |len: usize| {
        let len = len.max(1);
        if let Some(ptr) = home.take(len) {
            return Ok(block(&home, ptr as *mut u8, len));
        }
        let budget = budget_bytes();
        if PINNED_BYTES.fetch_add(len, Ordering::Relaxed) + len > budget {
            PINNED_BYTES.fetch_sub(len, Ordering::Relaxed);
            return Err(Error::Backend(format!(
                "page-locked frame memory would pass its budget of {} MB \
                 (REGIONDROP_CUDA_FRAME_POOL_MB)",
                budget >> 20
            )));
        }
        let ptr = allocate(&home.ctx, len).inspect_err(|_| {
            PINNED_BYTES.fetch_sub(len, Ordering::Relaxed);
        })?;
        PINNED_FRAMES.insert(ptr as usize, len);
        Ok(block(&home, ptr, len))
    })
}

fn block(home: &Arc<FreeBlocks>, ptr: *mut u8, len: usize) -> FrameBlock {
    FrameBlock::new(PinnedFrame {
        home: home.clone(),
        ptr,
        len,
    })
}

/// `len` zeroed bytes of portable page-locked memory.
fn allocate(ctx: &Arc<CudaContext>, len: usize) -> Result<*mut u8> {
    let _setup = setup_guard();
    ctx.bind_to_thread().map_err(drv("bind"))?;
    // SAFETY: a plain host allocation of len bytes, zeroed below before any read.
    let ptr = unsafe { cudarc::driver::result::malloc_host(len, sys::CU_MEMHOSTALLOC_PORTABLE) }
        .map_err(drv("pinned frame alloc"))? as *mut u8;
    // SAFETY: freshly allocated, len bytes.
    unsafe { std::ptr::write_bytes(ptr, 0, len) };
    Ok(ptr)
}
