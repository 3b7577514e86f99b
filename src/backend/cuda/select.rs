//! Candidate selection on the device (cuda/select.cu): the detection decoder's score test
//! ([`Gate`]) runs where the head's outputs are, and only the rows of the anchors that pass come
//! down, instead of every output value (1.8 M values for NanoDet 416, 1.6 M for YOLOv8n at
//! 1280×736; typically tens to hundreds of candidates).
//!
//! The table and launch code here are plain data and [`Launcher`] calls, so tests drive them
//! against the kernel compiled for the host as well as on a GPU.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr};

use super::driver::{drv, Pinned};
use super::geometry;
use super::layers::{KArg, Kernel, Launcher};
use crate::detect::{Candidates, Gate};
use crate::error::Result;

/// Parts per level and ints per level of the kernel's table (`RD_SELECT_PARTS`,
/// `RD_SELECT_INTS` in cuda/select.cu).
pub const PARTS: usize = 2;
pub const INTS: usize = 6 + 3 * PARTS;

/// A gate laid out for rd_select.
#[derive(Clone, Debug, PartialEq)]
pub struct SelectTable {
    /// INTS per level.
    pub levels: Vec<i32>,
    /// PARTS device addresses per level (0 for an unused part).
    pub parts: Vec<u64>,
    /// Anchors of all levels.
    pub total: usize,
    /// Values per candidate row (the longest level's row).
    pub row_len: usize,
}

impl SelectTable {
    /// The table of `gate` with each output's device address and length (`output(i)`: None where
    /// output i is not a device result). None where the device cannot select: an output the
    /// host computes, a level of more than [`PARTS`] parts, a part that reaches past its output,
    /// or sizes beyond the kernel's 32-bit ints.
    pub fn new(gate: &Gate, output: impl Fn(usize) -> Option<(u64, usize)>) -> Option<Self> {
        let mut t = SelectTable {
            levels: Vec::with_capacity(gate.levels.len() * INTS),
            parts: Vec::with_capacity(gate.levels.len() * PARTS),
            total: 0,
            row_len: gate.row_len(),
        };
        let int = |v: usize| i32::try_from(v).ok();
        for l in &gate.levels {
            if l.parts.len() > PARTS || l.anchors == 0 {
                return None;
            }
            t.levels.extend([
                int(l.anchors)?,
                int(t.total)?,
                int(l.row_len())?,
                int(l.scores.start)?,
                int(l.scores.end)?,
                l.objectness.map_or(Some(-1), int)?,
            ]);
            for pi in 0..PARTS {
                match l.parts.get(pi) {
                    Some(p) => {
                        let (addr, len) = output(p.output)?;
                        if p.feats == 0 || p.last(l.anchors) >= len {
                            return None;
                        }
                        t.levels.extend([
                            int(p.feats)?,
                            int(p.anchor_stride)?,
                            int(p.feat_stride)?,
                        ]);
                        t.parts.push(addr);
                    }
                    None => {
                        t.levels.extend([0, 0, 0]);
                        t.parts.push(0);
                    }
                }
            }
            t.total += l.anchors;
        }
        int(t.total)?;
        int(t.total.checked_mul(t.row_len)?)?;
        (t.total > 0).then_some(t)
    }
}

/// Device addresses of one selection: the uploaded table, the zeroed counter and the id and row
/// buffers (room for every anchor).
#[derive(Clone, Copy, Debug)]
pub struct SelectArgs {
    pub levels: u64,
    pub n_levels: usize,
    pub parts: u64,
    pub total: usize,
    pub threshold: f32,
    pub count: u64,
    pub ids: u64,
    pub rows: u64,
    pub row_len: usize,
}

/// Launches rd_select (the counter must be zero).
pub fn launch_select(dev: &impl Launcher, a: &SelectArgs) -> Result<()> {
    let Some(d) = geometry::linear_launch(a.total) else {
        return Ok(());
    };
    dev.launch(
        Kernel::Select,
        d,
        &[
            KArg::Ptr(a.levels),
            KArg::I32(a.n_levels as i32),
            KArg::Ptr(a.parts),
            KArg::I32(a.total as i32),
            KArg::F32(a.threshold),
            KArg::Ptr(a.count),
            KArg::Ptr(a.ids),
            KArg::Ptr(a.rows),
            KArg::I32(a.row_len as i32),
        ],
    )
}

/// Candidates downloaded with the count, before knowing it; more take a second copy.
const PREFETCH: usize = 256;

/// The device side of a selection: the table, the counter, room for every anchor's id and row on
/// the device and in pinned host memory, and the last run's candidates.
pub(super) struct SelectDev {
    table: SelectTable,
    threshold: f32,
    levels: CudaSlice<i32>,
    parts: CudaSlice<u64>,
    count: CudaSlice<u32>,
    ids: CudaSlice<u32>,
    rows: CudaSlice<f32>,
    count_host: Pinned<u32>,
    ids_host: Pinned<u32>,
    rows_host: Pinned<f32>,
    pub(super) candidates: Candidates,
    /// The candidates belong to a run made with this selection.
    pub(super) fresh: bool,
}

impl SelectDev {
    /// Allocates and uploads; the caller holds the set-up guard (pinned allocations).
    pub(super) fn new(
        ctx: &Arc<CudaContext>,
        stream: &Arc<CudaStream>,
        table: SelectTable,
        threshold: f32,
    ) -> Result<Self> {
        let rows = table.total * table.row_len;
        Ok(SelectDev {
            levels: stream.clone_htod(&table.levels).map_err(drv("upload"))?,
            parts: stream.clone_htod(&table.parts).map_err(drv("upload"))?,
            count: stream.alloc_zeros(1).map_err(drv("alloc"))?,
            ids: stream.alloc_zeros(table.total).map_err(drv("alloc"))?,
            rows: stream.alloc_zeros(rows).map_err(drv("alloc"))?,
            count_host: Pinned::new(ctx, 1)?,
            ids_host: Pinned::new(ctx, table.total)?,
            rows_host: Pinned::new(ctx, rows)?,
            candidates: Candidates::default(),
            fresh: false,
            table,
            threshold,
        })
    }

    /// Whether this selection reads `table` (then only its threshold needs setting).
    pub(super) fn reads(&self, table: &SelectTable) -> bool {
        self.table == *table
    }

    /// A new threshold from the next run on.
    pub(super) fn set_threshold(&mut self, threshold: f32) {
        self.threshold = threshold;
        self.fresh = false;
    }

    /// Device bytes held.
    pub(super) fn bytes(&self) -> usize {
        (self.levels.len() + self.count.len() + self.ids.len() + self.rows.len()) * 4
            + self.parts.len() * 8
    }

    /// Enqueues the selection on `stream` (counter zeroed, the kernel through `dev`) and the
    /// download of the count with the first [`PREFETCH`] candidates.
    pub(super) fn enqueue(&mut self, dev: &impl Launcher, stream: &Arc<CudaStream>) -> Result<()> {
        stream
            .memset_zeros(&mut self.count)
            .map_err(drv("memset"))?;
        let args = SelectArgs {
            levels: self.levels.device_ptr(stream).0,
            n_levels: self.table.levels.len() / INTS,
            parts: self.parts.device_ptr(stream).0,
            total: self.table.total,
            threshold: self.threshold,
            count: self.count.device_ptr(stream).0,
            ids: self.ids.device_ptr(stream).0,
            rows: self.rows.device_ptr(stream).0,
            row_len: self.table.row_len,
        };
        launch_select(dev, &args)?;
        self.download(stream, 0, PREFETCH.min(self.table.total))
    }

    /// After the stream finished `enqueue`: enqueues the download of the candidates past the
    /// prefetched ones, if any; returns whether it did (the caller synchronises again).
    pub(super) fn enqueue_rest(&mut self, stream: &Arc<CudaStream>) -> Result<bool> {
        let n = self.count_now();
        if n <= PREFETCH {
            return Ok(false);
        }
        self.download(stream, PREFETCH, n)?;
        Ok(true)
    }

    /// Takes the downloaded candidates (the stream has finished every download), sorted by id.
    pub(super) fn collect(&mut self) {
        let n = self.count_now();
        let c = &mut self.candidates;
        c.clear(self.threshold, self.table.row_len);
        c.ids.extend_from_slice(&self.ids_host.as_slice()[..n]);
        c.rows
            .extend_from_slice(&self.rows_host.as_slice()[..n * self.table.row_len]);
        c.sort();
        self.fresh = true;
    }

    fn count_now(&self) -> usize {
        (self.count_host.as_slice()[0] as usize).min(self.table.total)
    }

    /// Enqueues the download of candidates `from..to` (with the count when `from` is 0).
    fn download(&mut self, stream: &Arc<CudaStream>, from: usize, to: usize) -> Result<()> {
        let cu = stream.cu_stream();
        let rl = self.table.row_len;
        let ids = self.ids.device_ptr(stream).0 + (from * 4) as u64;
        let rows = self.rows.device_ptr(stream).0 + (from * rl * 4) as u64;
        // SAFETY: the device buffers hold `total` ids and `total · row_len` values and the pinned
        // ones as many; from <= to <= total. The host reads them only after a synchronize.
        unsafe {
            use cudarc::driver::result::memcpy_dtoh_async;
            if from == 0 {
                let count = self.count.device_ptr(stream).0;
                memcpy_dtoh_async(self.count_host.as_mut_slice(), count, cu)
                    .map_err(drv("download"))?;
            }
            memcpy_dtoh_async(&mut self.ids_host.as_mut_slice()[from..to], ids, cu)
                .map_err(drv("download"))?;
            memcpy_dtoh_async(
                &mut self.rows_host.as_mut_slice()[from * rl..to * rl],
                rows,
                cu,
            )
            .map_err(drv("download"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::DecoderKind;

    #[test]
    fn tables_follow_the_gate_and_refuse_what_the_kernel_cannot_read() {
        let shapes = vec![vec![1, 4, 3], vec![1, 16, 3], vec![1, 4, 8], vec![1, 16, 8]];
        let gate = Gate::new(DecoderKind::NanoDet, &shapes, 8, 8, 0.3).unwrap();
        let len = |i: usize| shapes[i].iter().product::<usize>();
        let t = SelectTable::new(&gate, |i| Some((1000 * (i as u64 + 1), len(i)))).unwrap();
        assert_eq!((t.total, t.row_len), (20, 11));
        assert_eq!(t.levels.len(), 2 * INTS);
        assert_eq!(&t.levels[..INTS], &[4, 0, 11, 0, 3, -1, 3, 3, 1, 8, 8, 1]);
        assert_eq!(&t.levels[INTS..INTS + 2], &[16, 4]);
        assert_eq!(t.parts, vec![1000, 3000, 2000, 4000]);
        // An output the host computes, or one shorter than its anchors need.
        assert!(SelectTable::new(&gate, |i| (i != 2).then(|| (8, len(i)))).is_none());
        assert!(SelectTable::new(&gate, |i| Some((8, len(i) - 1))).is_none());
        let v5 = Gate::new(DecoderKind::YoloV5, &[vec![1, 7, 9]], 8, 8, 0.3).unwrap();
        let t = SelectTable::new(&v5, |_| Some((8, 63))).unwrap();
        assert_eq!(&t.levels, &[7, 0, 9, 5, 9, 4, 9, 9, 1, 0, 0, 0]);
        assert_eq!(t.parts, vec![8, 0]);
    }
}
