//! The buffer pool the element offers upstream where its backend reads some memory faster than
//! ordinary memory (`Backend::frame_memory`: the CUDA backend's page-locked blocks). Decoders and
//! converters that take the pool write each frame into such a block, and the backend uploads the
//! frame from there, with no copy into its own staging buffer first.

use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use crate::backend::frame_memory::FrameMemory;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "regiondroppool",
        gst::DebugColorFlags::empty(),
        Some("regiondrop's pool of frame memory"),
    )
});

mod imp {
    use super::*;

    #[derive(Default)]
    pub struct FramePool {
        pub(super) memory: Mutex<Option<FrameMemory>>,
        /// Bytes of each buffer, from the configuration.
        size: Mutex<usize>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for FramePool {
        const NAME: &'static str = "GstRegionDropFramePool";
        type Type = super::FramePool;
        type ParentType = gst::BufferPool;
    }

    impl ObjectImpl for FramePool {}
    impl GstObjectImpl for FramePool {}

    impl BufferPoolImpl for FramePool {
        fn set_config(&self, config: &mut gst::BufferPoolConfigRef) -> bool {
            let Some((_, size, _, _)) = config.params() else {
                return false;
            };
            // Page-aligned blocks meet any alignment the configuration asks for.
            let ok = self.parent_set_config(config);
            if ok {
                *self.size.lock().unwrap() = size as usize;
            }
            ok
        }

        /// A block of the backend's memory; where that fails (page-locked memory is limited),
        /// ordinary memory, which the backend copies as it does any other frame.
        fn alloc_buffer(
            &self,
            _params: Option<&gst::BufferPoolAcquireParams>,
        ) -> Result<gst::Buffer, gst::FlowError> {
            let size = *self.size.lock().unwrap();
            let memory = self.memory.lock().unwrap().clone();
            match memory.map(|m| m(size)) {
                Some(Ok(block)) => Ok(gst::Buffer::from_mut_slice(block)),
                Some(Err(e)) => {
                    gst::warning!(CAT, imp = self, "{e}: a buffer in ordinary memory instead");
                    gst::Buffer::with_size(size).map_err(|_| gst::FlowError::Error)
                }
                None => gst::Buffer::with_size(size).map_err(|_| gst::FlowError::Error),
            }
        }
    }
}

glib::wrapper! {
    pub struct FramePool(ObjectSubclass<imp::FramePool>) @extends gst::BufferPool, gst::Object;
}

/// Buffers a pool of frame memory holds at least.
const FRAME_POOL_MIN: u32 = 2;

/// Adds a pool of `memory` to an allocation query that asks for one, for buffers of its video
/// caps. It goes first, ahead of a plain system-memory pool downstream proposed (which moves to
/// the end), but behind a pool of a class of its own (a sink's shared or device memory, which
/// saves a copy there). Returns the caps where it added the pool.
pub fn offer_frame_pool(
    query: &mut gst::query::Allocation,
    memory: FrameMemory,
) -> Option<gst::Caps> {
    let (caps, need_pool) = query.get_owned();
    let caps = caps.filter(|_| need_pool)?;
    let size = gst_video::VideoInfo::from_caps(&caps).ok()?.size() as u32;
    let first = query.allocation_pools().next();
    // Enough buffers for whatever downstream holds, as its own pool would have.
    let min = FRAME_POOL_MIN.max(first.as_ref().map_or(0, |p| p.2));
    let pool = FramePool::new(memory, &caps, size, min)?;
    match first {
        Some((p, s, mn, mx)) if p.as_ref().is_none_or(plain_pool) => {
            query.set_nth_allocation_pool(0, Some(&pool), size, min, 0);
            query.add_allocation_pool(p.as_ref(), s, mn, mx);
        }
        _ => query.add_allocation_pool(Some(&pool), size, min, 0),
    }
    Some(caps)
}

/// Whether `pool` hands out ordinary system memory: GStreamer's own pool classes.
fn plain_pool(pool: &gst::BufferPool) -> bool {
    let t = pool.type_();
    t == gst::BufferPool::static_type() || t == gst_video::VideoBufferPool::static_type()
}

impl FramePool {
    /// A pool whose buffers are blocks of `memory`, configured for `caps` and buffers of `size`
    /// bytes, at least `min` of them.
    pub fn new(memory: FrameMemory, caps: &gst::Caps, size: u32, min: u32) -> Option<Self> {
        let pool: Self = glib::Object::new();
        *pool.imp().memory.lock().unwrap() = Some(memory);
        let mut config = pool.config();
        config.set_params(Some(caps), size, min, 0);
        pool.set_config(config).ok()?;
        Some(pool)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::backend::frame_memory::{FrameBlock, HeapBytes};
    use crate::error::Error;

    /// Blocks on the heap, recording where each one lies; `fail` refuses every request.
    fn heap_memory(blocks: Arc<Mutex<Vec<usize>>>, fail: bool) -> FrameMemory {
        Arc::new(move |len| {
            if fail {
                return Err(Error::Backend("no page-locked memory left".into()));
            }
            let block = vec![0u8; len];
            blocks.lock().unwrap().push(block.as_ptr() as usize);
            Ok(FrameBlock::new(HeapBytes(block)))
        })
    }

    #[test]
    fn buffers_are_blocks_of_the_memory_and_come_back_to_the_pool() {
        gst::init().unwrap();
        let blocks = Arc::new(Mutex::new(Vec::new()));
        let caps = gst::Caps::builder("video/x-raw").build();
        let pool = FramePool::new(heap_memory(blocks.clone(), false), &caps, 1000, 2).unwrap();
        pool.set_active(true).unwrap();
        let held: Vec<gst::Buffer> = (0..3).map(|_| pool.acquire_buffer(None).unwrap()).collect();
        let allocated = blocks.lock().unwrap().clone();
        assert_eq!(allocated.len(), 3, "two at activation, one more on demand");
        for b in &held {
            let map = b.map_readable().unwrap();
            assert_eq!(map.size(), 1000);
            assert!(
                allocated.contains(&(map.as_ptr() as usize)),
                "a block of the memory"
            );
        }
        drop(held);
        let again = pool.acquire_buffer(None).unwrap();
        let at = again.map_readable().unwrap().as_ptr() as usize;
        assert!(allocated.contains(&at), "recycled");
        assert_eq!(blocks.lock().unwrap().len(), 3, "no new block");
        drop(again);
        pool.set_active(false).unwrap();
    }

    /// The pool goes first in a query that asks for one, with downstream's behind it and at
    /// least as many buffers; a query that needs no pool, or carries no video caps, is left as
    /// it was.
    #[test]
    fn the_frame_pool_goes_ahead_of_downstreams() {
        gst::init().unwrap();
        let blocks = Arc::new(Mutex::new(Vec::new()));
        let memory = heap_memory(blocks.clone(), false);
        let caps = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, 32, 8)
            .build()
            .unwrap()
            .to_caps()
            .unwrap();
        let theirs = gst::BufferPool::new();
        let mut q = gst::query::Allocation::new(Some(&caps), true);
        q.add_allocation_pool(Some(&theirs), 768, 3, 5);
        assert_eq!(offer_frame_pool(&mut q, memory.clone()), Some(caps.clone()));
        let pools: Vec<_> = q.allocation_pools().collect();
        assert_eq!(pools.len(), 2);
        let (ours, size, min, max) = pools[0].clone();
        assert_eq!((size, min, max), (32 * 8 * 3, 3, 0));
        assert_eq!(pools[1].0.as_ref(), Some(&theirs));
        assert_eq!((pools[1].1, pools[1].2, pools[1].3), (768, 3, 5));
        let ours = ours.unwrap();
        ours.set_active(true).unwrap();
        let b = ours.acquire_buffer(None).unwrap();
        let at = b.map_readable().unwrap().as_ptr() as usize;
        assert!(
            blocks.lock().unwrap().contains(&at),
            "a block of the memory"
        );
        drop(b);
        ours.set_active(false).unwrap();
        // Behind a pool of a class of its own (here another frame pool stands for a sink's).
        let special = FramePool::new(memory.clone(), &caps, 768, 1).unwrap();
        let mut q = gst::query::Allocation::new(Some(&caps), true);
        q.add_allocation_pool(Some(&special), 768, 1, 0);
        assert!(offer_frame_pool(&mut q, memory.clone()).is_some());
        let pools: Vec<_> = q.allocation_pools().collect();
        assert_eq!(pools.len(), 2);
        assert_eq!(
            pools[0].0.as_ref(),
            Some(special.upcast_ref::<gst::BufferPool>())
        );
        assert_ne!(
            pools[1].0.as_ref(),
            Some(special.upcast_ref::<gst::BufferPool>())
        );
        // Alone, with the minimum of its own.
        let mut q = gst::query::Allocation::new(Some(&caps), true);
        assert!(offer_frame_pool(&mut q, memory.clone()).is_some());
        let pools: Vec<_> = q.allocation_pools().collect();
        assert_eq!((pools.len(), pools[0].2), (1, FRAME_POOL_MIN));
        for mut q in [
            gst::query::Allocation::new(Some(&caps), false),
            gst::query::Allocation::new(None, true),
            gst::query::Allocation::new(Some(&gst::Caps::builder("audio/x-raw").build()), true),
        ] {
            assert_eq!(offer_frame_pool(&mut q, memory.clone()), None);
            assert_eq!(q.allocation_pools().count(), 0);
        }
    }

    #[test]
    fn a_refused_block_becomes_an_ordinary_buffer() {
        gst::init().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let refusing: FrameMemory = Arc::new(move |len| {
            counted.fetch_add(1, Ordering::Relaxed);
            heap_memory(Arc::default(), true)(len)
        });
        let caps = gst::Caps::builder("video/x-raw").build();
        let pool = FramePool::new(refusing, &caps, 640, 1).unwrap();
        pool.set_active(true).unwrap();
        let b = pool.acquire_buffer(None).unwrap();
        assert_eq!(b.size(), 640);
        assert!(
            calls.load(Ordering::Relaxed) >= 1,
            "the memory was asked first"
        );
        drop(b);
        pool.set_active(false).unwrap();
    }
}
