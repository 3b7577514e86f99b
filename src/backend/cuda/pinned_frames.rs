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

use cudarc::driver::CudaContext;

use super::driver::{setup_guard, Pinned};
use crate::backend::frame_memory::{FrameBlock, FrameBytes, FrameMemory, LiveBlocks};
use crate::error::Error;

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

fn address(block: &Pinned<u8>) -> usize {
    block.as_slice().as_ptr() as usize
}

/// One allocator's blocks not in use.
#[derive(Default)]
struct FreeBlocks(Mutex<Vec<Pinned<u8>>>);

impl FreeBlocks {
    /// A free block of exactly `len` bytes, taken off the list.
    fn take(&self, len: usize) -> Option<Pinned<u8>> {
        let mut free = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let i = free.iter().position(|b| b.len == len)?;
        Some(free.swap_remove(i))
    }

    fn put(&self, block: Pinned<u8>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(block);
    }
}

impl Drop for FreeBlocks {
    /// The allocator and every block of it are gone: the free blocks are freed for good. No
    /// backend reads them: a block goes on the list only when its buffer is gone, and a backend
    /// reads a block only while the element holds its buffer (and synchronises before giving
    /// it back).
    fn drop(&mut self) {
        let free = std::mem::take(self.0.get_mut().unwrap_or_else(|e| e.into_inner()));
        if free.is_empty() {
            return;
        }
        // cuMemFreeHost synchronises the device: not during another backend's graph capture.
        let _setup = setup_guard();
        for block in free {
            PINNED_FRAMES.remove(address(&block));
            PINNED_BYTES.fetch_sub(block.len, Ordering::Relaxed);
        }
    }
}

struct PinnedFrame {
    /// Where the block goes back to.
    home: Arc<FreeBlocks>,
    /// Some until dropped.
    block: Option<Pinned<u8>>,
}

impl FrameBytes for PinnedFrame {
    fn bytes(&self) -> &[u8] {
        self.block.as_ref().expect("until dropped").as_slice()
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        self.block.as_mut().expect("until dropped").as_mut_slice()
    }
}

impl Drop for PinnedFrame {
    fn drop(&mut self) {
        if let Some(block) = self.block.take() {
            self.home.put(block);
        }
    }
}

/// An allocator of page-locked blocks in `ctx`'s process, each one registered while it lives.
pub(super) fn memory(ctx: Arc<CudaContext>) -> FrameMemory {
    let home = Arc::new(FreeBlocks::default());
    Arc::new(move |len: usize| {
        let len = len.max(1);
        let block = match home.take(len) {
            Some(block) => block,
            None => {
                let budget = budget_bytes();
                if PINNED_BYTES.fetch_add(len, Ordering::Relaxed) + len > budget {
                    PINNED_BYTES.fetch_sub(len, Ordering::Relaxed);
                    return Err(Error::Backend(format!(
                        "page-locked frame memory would pass its budget of {} MB \
                         (REGIONDROP_CUDA_FRAME_POOL_MB)",
                        budget >> 20
                    )));
                }
                let block = {
                    let _setup = setup_guard();
                    Pinned::new(&ctx, len)
                }
                .inspect_err(|_| {
                    PINNED_BYTES.fetch_sub(len, Ordering::Relaxed);
                })?;
                PINNED_FRAMES.insert(address(&block), len);
                block
            }
        };
        Ok(FrameBlock::new(PinnedFrame {
            home: home.clone(),
            block: Some(block),
        }))
    })
}
