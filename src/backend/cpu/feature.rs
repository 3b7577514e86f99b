//! Raw access to NHWC feature buffers for tile-parallel kernels. A layer may read and write the
//! same buffer (concat slices): tiles and channel ranges written by one task never overlap those of
//! another, which is what makes the shared pointers sound.

use crate::mask::TileGrid;
use crate::model::plan::{FeatureBuf, View};

#[derive(Clone, Copy)]
pub struct FeatRef {
    pub ptr: *const f32,
    pub pitch: usize,
    pub c_off: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

#[derive(Clone, Copy)]
pub struct FeatMut {
    pub ptr: *mut f32,
    pub pitch: usize,
    pub c_off: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub scale: usize,
}

// SAFETY: see module docs; kernels write disjoint (tile, channel-range) regions.
unsafe impl Send for FeatRef {}
unsafe impl Sync for FeatRef {}
unsafe impl Send for FeatMut {}
unsafe impl Sync for FeatMut {}

impl FeatRef {
    pub fn new(bufs: &[Vec<f32>], specs: &[FeatureBuf], v: View) -> Self {
        let b = &specs[v.buf];
        FeatRef {
            ptr: bufs[v.buf].as_ptr(),
            pitch: b.c,
            c_off: v.c_off,
            c: v.c,
            h: b.h,
            w: b.w,
        }
    }

    /// The view's channels at pixel (y, x).
    #[inline(always)]
    pub fn px(&self, y: usize, x: usize) -> &[f32] {
        debug_assert!(y < self.h && x < self.w);
        unsafe {
            std::slice::from_raw_parts(
                self.ptr.add((y * self.w + x) * self.pitch + self.c_off),
                self.c,
            )
        }
    }

    /// Where the view's channels at pixel (y, x) start, as a raw pointer into the whole buffer (for
    /// kernels that read beyond one pixel's channels from it, e.g. a kernel row).
    #[inline(always)]
    pub fn ptr_at(&self, y: usize, x: usize) -> *const f32 {
        debug_assert!(y < self.h && x < self.w);
        self.ptr
            .wrapping_add((y * self.w + x) * self.pitch + self.c_off)
    }

    /// `n` consecutive pixels from (y, x), all channels: only for views that span the whole buffer.
    #[inline(always)]
    pub fn pixels(&self, y: usize, x: usize, n: usize) -> &[f32] {
        debug_assert!(self.c_off == 0 && self.c == self.pitch && x + n <= self.w && y < self.h);
        unsafe {
            std::slice::from_raw_parts(self.ptr.add((y * self.w + x) * self.pitch), n * self.c)
        }
    }
}

impl FeatMut {
    pub fn new(bufs: &mut [Vec<f32>], specs: &[FeatureBuf], v: View) -> Self {
        let b = &specs[v.buf];
        FeatMut {
            ptr: bufs[v.buf].as_mut_ptr(),
            pitch: b.c,
            c_off: v.c_off,
            c: v.c,
            h: b.h,
            w: b.w,
            scale: b.scale,
        }
    }

    /// The view's channels at pixel (y, x), for writing.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub fn px(&self, y: usize, x: usize) -> &mut [f32] {
        debug_assert!(y < self.h && x < self.w);
        unsafe {
            std::slice::from_raw_parts_mut(
                self.ptr.add((y * self.w + x) * self.pitch + self.c_off),
                self.c,
            )
        }
    }

    /// `n` consecutive pixels from (y, x), all channels, for writing: only for views that span
    /// the whole buffer.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub fn pixels(&self, y: usize, x: usize, n: usize) -> &mut [f32] {
        debug_assert!(self.c_off == 0 && self.c == self.pitch && x + n <= self.w && y < self.h);
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.add((y * self.w + x) * self.pitch), n * self.c)
        }
    }

    /// Where the view's channels at pixel (y, x) start, as a raw pointer into the whole buffer (for
    /// kernels whose tasks write different channels of the same pixel).
    #[inline(always)]
    pub fn ptr_at(&self, y: usize, x: usize) -> *mut f32 {
        debug_assert!(y < self.h && x < self.w);
        self.ptr
            .wrapping_add((y * self.w + x) * self.pitch + self.c_off)
    }

    /// Pixel rectangle of tile `t` in this map.
    #[inline]
    pub fn rect(&self, grid: &TileGrid, t: u32) -> (usize, usize, usize, usize) {
        grid.rect(t as usize, self.scale, self.w, self.h)
    }
}

/// A pointer that may be shared across rayon tasks that write disjoint ranges.
#[derive(Clone, Copy)]
pub struct SharedMut(pub *mut f32);
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// # Safety
    /// The range must be in bounds and not written by any other task at the same time.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, off: usize, len: usize) -> &mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(off), len)
    }
}
