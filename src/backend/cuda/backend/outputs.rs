//! What comes back to the host: the device results the host reads, downloaded into their slots
//! after a frame (or, for graph outputs a selection stands in for, when asked for), and the
//! decoder's candidates selected on the device.

use super::CudaBackend;
use crate::backend::cuda::driver::{drv, par_copy};
use crate::error::Result;

impl CudaBackend {
    /// The device address and length of graph output `i`, where a device step writes it last.
    pub(super) fn output_on_device(&self, i: usize) -> Option<(u64, usize)> {
        let si = self.tail.output_writer(&self.plan, i)?;
        let d = self.steps[si].result()?;
        Some((self.ptr(d), d.len()))
    }

    /// Whether step `si`'s device result is downloaded during the run: where the host reads it,
    /// except graph outputs while a selection stands in for them.
    pub(super) fn downloads_now(&self, si: usize) -> bool {
        self.tail.download[si] && !(self.select.is_some() && self.tail.output_only[si])
    }

    /// Runs the gate's selection after a run and downloads the candidates; the graph outputs
    /// stay on the device until asked for.
    pub(super) fn select_candidates(&mut self) -> Result<()> {
        let Some(mut sel) = self.select.take() else {
            return Ok(());
        };
        let r = (|| -> Result<()> {
            sel.enqueue(self, &self.stream)?;
            self.sync()?;
            if sel.enqueue_rest(&self.stream)? {
                self.sync()?;
            }
            sel.collect();
            Ok(())
        })();
        self.select = Some(sel);
        self.outputs_stale = true;
        r
    }

    /// Downloads the graph outputs a selection left on the device.
    pub(super) fn fetch_outputs(&mut self) -> Result<()> {
        if std::mem::take(&mut self.outputs_stale) {
            let n = self.plan.steps.len();
            self.pending
                .extend((0..n).filter(|&si| self.tail.output_only[si]));
        }
        self.flush()
    }

    /// Downloads the device results the host reads (Export, GlobalPool, device Rearrange) into
    /// their slots.
    pub(super) fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let plan = self.plan.clone();
        let pending = std::mem::take(&mut self.pending);
        // All downloads go into pinned buffers asynchronously, then one synchronisation, then
        // host copies into the slots.
        for &si in &pending {
            let (Some(slot), Some(d)) = (self.tail.slot_of(&plan, si), self.steps[si].result())
            else {
                continue;
            };
            let (src, dlen) = (self.ptr(d), d.len());
            let stream = self.stream.cu_stream();
            if let Some(h) = &mut self.out_host[si] {
                let n = self.slots[slot].data.len().min(dlen).min(h.len);
                // SAFETY: d and h hold at least n elements; h is read only after the
                // synchronize below.
                unsafe {
                    cudarc::driver::result::memcpy_dtoh_async(
                        &mut h.as_mut_slice()[..n],
                        src,
                        stream,
                    )
                }
                .map_err(drv("download"))?;
            }
        }
        self.sync()?;
        for &si in &pending {
            let Some(slot) = self.tail.slot_of(&plan, si) else {
                continue;
            };
            if let (Some(d), Some(h)) = (self.steps[si].result(), &self.out_host[si]) {
                let dst = &mut self.slots[slot].data;
                let n = dst.len().min(d.len()).min(h.len);
                par_copy(&mut dst[..n], &h.as_slice()[..n]);
            }
        }
        // Keep the list's capacity: no allocation per frame.
        let mut pending = pending;
        pending.clear();
        self.pending = pending;
        Ok(())
    }
}
