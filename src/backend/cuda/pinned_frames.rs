//! Page-locked frame memory for the element's buffer pool (see `backend::frame_memory`): a frame
//! that upstream wrote into one of these blocks is uploaded straight from it.

use std::sync::Arc;

use cudarc::driver::{sys, CudaContext};

use super::driver::{drv, setup_guard};
use crate::backend::frame_memory::{FrameBlock, FrameBytes, FrameMemory, LiveBlocks};

/// Every live block of this process, whichever backend's context allocated it (the allocation
/// is portable: pinned for every context).
pub(super) static PINNED_FRAMES: LiveBlocks = LiveBlocks::new();

struct PinnedFrame {
    /// Kept alive while the block is: the free needs it current.
    ctx: Arc<CudaContext>,
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
        // Out of the registry first: no backend starts an upload from it after this.
        PINNED_FRAMES.remove(self.ptr as usize);
        // cuMemFreeHost synchronises the device: not during another backend's graph capture.
        let _setup = setup_guard();
        let _ = self.ctx.bind_to_thread();
        // SAFETY: allocated by malloc_host in `memory`. No upload from it is in flight: a
        // backend reads a block only while the element holds its buffer, and synchronises its
        // stream before the frame is given back.
        let _ = unsafe { cudarc::driver::result::free_host(self.ptr as *mut std::ffi::c_void) };
    }
}

/// An allocator of page-locked blocks in `ctx`'s process, each one registered while it lives.
pub(super) fn memory(ctx: Arc<CudaContext>) -> FrameMemory {
    Arc::new(move |len: usize| {
        let len = len.max(1);
        let _setup = setup_guard();
        ctx.bind_to_thread().map_err(drv("bind"))?;
        // SAFETY: a plain host allocation of len bytes, zeroed below before any read.
        let ptr = unsafe { cudarc::driver::result::malloc_host(len, sys::CU_MEMHOSTALLOC_PORTABLE) }
            .map_err(drv("pinned frame alloc"))? as *mut u8;
        // SAFETY: freshly allocated, len bytes.
        unsafe { std::ptr::write_bytes(ptr, 0, len) };
        PINNED_FRAMES.insert(ptr as usize, len);
        Ok(FrameBlock::new(PinnedFrame {
            ctx: ctx.clone(),
            ptr,
            len,
        }))
    })
}
