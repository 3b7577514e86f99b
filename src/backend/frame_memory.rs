//! Host memory for incoming frames that a backend reads faster than ordinary memory. The CUDA
//! backend's blocks are page-locked: it uploads a frame that lies in one straight from there, with
//! no copy into its own staging buffer first. The element offers such memory upstream as a buffer
//! pool (`regiondrop::pool`), so decoders and converters write their frames into it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::error::Result;

/// The bytes of one block, owned by whatever allocated them.
pub trait FrameBytes: Send + 'static {
    fn bytes(&self) -> &[u8];
    fn bytes_mut(&mut self) -> &mut [u8];
}

/// One block of frame memory, as a buffer pool wraps it into a `gst::Buffer`.
pub struct FrameBlock(Box<dyn FrameBytes>);

impl FrameBlock {
    pub fn new(bytes: impl FrameBytes) -> Self {
        FrameBlock(Box::new(bytes))
    }
}

impl AsRef<[u8]> for FrameBlock {
    fn as_ref(&self) -> &[u8] {
        self.0.bytes()
    }
}

impl AsMut<[u8]> for FrameBlock {
    fn as_mut(&mut self) -> &mut [u8] {
        self.0.bytes_mut()
    }
}

/// Allocates a block of frame memory of the given size.
pub type FrameMemory = Arc<dyn Fn(usize) -> Result<FrameBlock> + Send + Sync>;

/// The address ranges of the live blocks of one kind, so that a backend can tell whether a
/// frame's bytes lie in one of them.
pub struct LiveBlocks(Mutex<BTreeMap<usize, usize>>);

impl LiveBlocks {
    pub const fn new() -> Self {
        LiveBlocks(Mutex::new(BTreeMap::new()))
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<usize, usize>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a block of `len` bytes at `start`.
    pub fn insert(&self, start: usize, len: usize) {
        self.map().insert(start, start + len);
    }

    /// Forgets the block at `start` (before its memory is freed).
    pub fn remove(&self, start: usize) {
        self.map().remove(&start);
    }

    /// Whether `bytes` lie wholly inside one live block (empty slices do, wherever they point).
    pub fn hold(&self, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return true;
        }
        let (start, end) = (
            bytes.as_ptr() as usize,
            bytes.as_ptr() as usize + bytes.len(),
        );
        self.map()
            .range(..=start)
            .next_back()
            .is_some_and(|(_, &block_end)| end <= block_end)
    }
}

impl Default for LiveBlocks {
    fn default() -> Self {
        Self::new()
    }
}

/// Ordinary heap bytes as frame memory, for the tests of what takes frame memory.
#[cfg(test)]
pub(crate) struct HeapBytes(pub Vec<u8>);

#[cfg(test)]
impl FrameBytes for HeapBytes {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_held_only_inside_one_live_block() {
        let a = [0u8; 64];
        let b = [0u8; 32];
        let blocks = LiveBlocks::new();
        // Block one is the first half of `a`, block two its second half.
        blocks.insert(a.as_ptr() as usize, 32);
        assert!(blocks.hold(&a[..32]));
        assert!(blocks.hold(&a[10..20]));
        assert!(blocks.hold(&a[31..32]));
        assert!(!blocks.hold(&a[30..40]), "past the block's end");
        assert!(!blocks.hold(&b), "not registered");
        assert!(blocks.hold(&b[..0]), "empty");
        blocks.insert(a.as_ptr() as usize + 32, 32);
        assert!(blocks.hold(&a[40..]));
        assert!(!blocks.hold(&a[30..40]), "across two blocks");
        blocks.remove(a.as_ptr() as usize);
        assert!(!blocks.hold(&a[10..20]), "freed");
        assert!(blocks.hold(&a[32..]));
    }

    #[test]
    fn blocks_give_their_bytes() {
        let mut block = FrameBlock::new(HeapBytes(vec![7; 5]));
        block.as_mut()[1] = 9;
        assert_eq!(block.as_ref(), &[7, 9, 7, 7, 7]);
    }
}
