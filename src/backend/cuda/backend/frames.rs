//! The frame stage of the CUDA backend: the frame's upload (pinned staging), the letterbox on
//! the device, change detection against the device reference, and the normalisation of the
//! changed tiles into the network input.

use cudarc::driver::{CudaSlice, CudaStream};

use super::CudaBackend;
use crate::backend::cuda::driver::{drv, par_copy, setup_guard, Pinned};
use crate::backend::cuda::geometry::{self, max_tile_px, Dims};
use crate::backend::cuda::layers::{self, kargs, Kernel, Launcher};
use crate::backend::cuda::pinned_frames::PINNED_FRAMES;
use crate::error::{Error, Result};
use crate::mask::{CellGrower, DiffMetric, MaskGrowth, RegionMask, TileGrid};
use crate::preprocess::{FramePlanes, InputNorm, Letterbox, LetterboxTaps, PixelSource};

/// State of the on-device change detector (see `Backend::detect_changes`).
pub(super) struct Detect {
    pub(super) reference: CudaSlice<u8>,
    pub(super) score: CudaSlice<f32>,
    pub(super) raw: CudaSlice<u8>,
    pub(super) dilated: CudaSlice<u8>,
    pub(super) mask_host: Pinned<u8>,
    /// Where the mask grows by a margin: the downloaded cells, grown into tiles on the host.
    pub(super) grower: CellGrower,
    /// The tiles that fired on their own scores (mean metric with a margin).
    pub(super) fired: RegionMask,
    /// Whether `detect_changes` answers (else the engine's host detector runs).
    pub(super) enabled: bool,
    /// The reference holds a frame (false at start and after `reset`).
    pub(super) valid: bool,
    /// The frame already in `rgb`: `write_input` for it reuses that upload and takes its input
    /// tiles (fired and refreshed) into the reference.
    pub(super) frame: Staged,
}

/// What the device's network image (`rgb`) holds for the next `write_input`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Staged {
    Nothing,
    /// The host image at this address and length (uploaded by `detect_changes`).
    Host(usize, usize),
    /// A frame letterboxed on the device (`letterbox_frame`): the engine passes an empty image.
    Device,
}

/// A frame's bytes on the device and the letterbox taps of the last frame geometry.
pub(super) struct DeviceFrames {
    /// Letterbox frames on the device (`CudaOptions::device_letterbox`).
    pub(super) enabled: bool,
    pub(super) bytes: CudaSlice<u8>,
    /// Pinned staging of the frame's bytes (grown with the frame), for an asynchronous upload.
    pub(super) staging: Option<Pinned<u8>>,
    /// Bytes of each piece of the frame's upload ([`upload_piece_bytes`]).
    pub(super) upload_piece: usize,
    /// Frames uploaded straight from page-locked blocks (`upload_direct`).
    pub(super) direct_uploads: u64,
    /// (frame w, frame h), the taps (column indices, column weights, row indices, row weights)
    /// and the letterbox.
    pub(super) taps: Option<TapsDev>,
}

pub(super) struct TapsDev {
    pub(super) size: (usize, usize),
    pub(super) ci: CudaSlice<i32>,
    pub(super) ca: CudaSlice<f32>,
    pub(super) ri: CudaSlice<i32>,
    pub(super) ra: CudaSlice<f32>,
    pub(super) lb: Letterbox,
}

impl CudaBackend {
    /// Uploads the frame (unless detection did), updates the reference and normalises the
    /// input tiles into the network input buffer.
    pub(super) fn write_input_tiles(
        &mut self,
        rgb: &[u8],
        norm: &InputNorm,
        tiles: &[u32],
    ) -> Result<()> {
        let (w, h) = (self.plan.input_w, self.plan.input_h);
        // The frame already on the device: letterboxed there, or uploaded by detect_changes for
        // this same slice.
        let staged = std::mem::replace(&mut self.det.frame, Staged::Nothing);
        let uploaded = match staged {
            Staged::Device => rgb.is_empty(),
            Staged::Host(p, l) => (p, l) == (rgb.as_ptr() as usize, rgb.len()),
            Staged::Nothing => false,
        };
        if !uploaded && rgb.len() != w * h * 3 {
            return Err(Error::Backend(format!(
                "input image of {} bytes does not match the network input {w}x{h}x3",
                rgb.len()
            )));
        }
        if tiles.is_empty() {
            return Ok(());
        }
        if tiles.len() > self.input_tiles.len() {
            return Err(Error::Backend(format!(
                "{} input tiles for a grid of {}",
                tiles.len(),
                self.grid.len()
            )));
        }
        self.ctx.bind_to_thread().map_err(drv("bind"))?;
        // The pinned staging buffers are free: every frame ends with a synchronisation.
        self.sync()?;
        if !uploaded {
            self.upload_frame(rgb)?;
        }
        self.tiles_host.as_mut_slice()[..tiles.len()].copy_from_slice(tiles);
        let tl = self.ptr(&self.input_tiles);
        // SAFETY: input_tiles holds grid.len() >= tiles.len() words (checked above); the pinned
        // source is not rewritten before the stream is synchronised.
        unsafe {
            cudarc::driver::result::memcpy_htod_async(
                tl,
                &self.tiles_host.as_slice()[..tiles.len()],
                self.stream.cu_stream(),
            )
        }
        .map_err(drv("tile upload"))?;
        if uploaded {
            // The tiles of this frame (fired and refreshed) become the detection reference.
            let g = self.grid;
            self.launch(
                Kernel::RefUpdate,
                Dims {
                    grid: (tiles.len() as u32, 4, 1),
                    block: (256, 1, 1),
                },
                &kargs!(
                    self.ptr(&self.rgb),
                    self.ptr(&self.det.reference),
                    w as i32,
                    h as i32,
                    g.tile as i32,
                    g.cols as i32,
                    tl,
                    0u64
                ),
            )?;
        }
        let b0 = &self.plan.buffers[0];
        let (tw, th) = max_tile_px(&self.grid, b0);
        let Some(d) = geometry::tile_launch(tiles.len(), tw * th * 3)? else {
            return Ok(());
        };
        let taps = norm.channel_taps();
        self.launch(
            Kernel::InputNorm,
            d,
            &kargs!(
                self.ptr(&self.rgb),
                self.ptr(&self.bufs[0]),
                b0.c as i32,
                w as i32,
                h as i32,
                self.ptr(&self.input_tiles),
                (self.grid.tile / b0.scale.max(1)) as i32,
                self.grid.cols as i32,
                taps[0].1,
                taps[1].1,
                taps[2].1,
                taps[0].2,
                taps[1].2,
                taps[2].2,
                norm.bgr as i32
            ),
        )
    }

    /// Uploads the frame's bytes as they are and letterboxes them into `rgb` with rd_letterbox.
    pub(super) fn letterbox_on_device(&mut self, frame: &dyn PixelSource) -> Result<Letterbox> {
        let (nw, nh) = (self.plan.input_w, self.plan.input_h);
        let (fw, fh) = (frame.width(), frame.height());
        self.ctx.bind_to_thread().map_err(drv("bind"))?;
        self.sync()?;
        let planes = frame.planes();
        let parts: [&[u8]; 3] = match &planes {
            FramePlanes::Packed(p) => [p.data, &[], &[]],
            FramePlanes::Yuv420(y) if y.interleaved => [y.y, y.u, &[]],
            FramePlanes::Yuv420(y) => [y.y, y.u, y.v],
        };
        let total: usize = parts.iter().map(|p| p.len()).sum();
        // A frame upstream wrote into the element's pool of page-locked blocks goes up from
        // there; any other through the staging buffer.
        let direct = parts.iter().all(|p| PINNED_FRAMES.hold(p));
        let staging_short = !direct && self.frames.staging.as_ref().is_none_or(|s| s.len < total);
        if self.frames.bytes.len() < total || staging_short {
            // A larger frame than before: (re)allocations take the setup guard (see SetupGuard).
            let _setup = setup_guard();
            if self.frames.bytes.len() < total {
                self.frames.bytes = self.stream.alloc_zeros(total).map_err(drv("alloc"))?;
            }
            if staging_short {
                self.frames.staging = None;
                self.frames.staging = Some(Pinned::new(&self.ctx, total)?);
            }
        }
        let base = self.ptr(&self.frames.bytes);
        let mut addrs = [0u64; 3];
        let mut off = 0;
        for (a, part) in addrs.iter_mut().zip(parts) {
            *a = base + off as u64;
            off += part.len();
        }
        if direct {
            upload_direct(&self.stream, &parts, base)?;
            self.frames.direct_uploads += 1;
        } else {
            // The staging buffer is written again only after the next frame's synchronisation
            // (above).
            let staging = self.frames.staging.as_mut().expect("allocated above");
            upload_staged(
                &self.stream,
                staging,
                &parts,
                base,
                self.frames.upload_piece,
            )?;
        }
        if self.frames.taps.as_ref().map(|t| t.size) != Some((fw, fh)) {
            let _setup = setup_guard();
            let t = LetterboxTaps::new(fw, fh, nw, nh);
            let up_i = |v: &[i32]| self.stream.clone_htod(v).map_err(drv("upload"));
            let up_f = |v: &[f32]| self.stream.clone_htod(v).map_err(drv("upload"));
            self.frames.taps = Some(TapsDev {
                size: (fw, fh),
                ci: up_i(&t.cols_i)?,
                ca: up_f(&t.cols_a)?,
                ri: up_i(&t.rows_i)?,
                ra: up_f(&t.rows_a)?,
                lb: t.lb,
            });
        }
        let t = self.frames.taps.as_ref().expect("taps set above");
        let args = layers::LetterboxArgs {
            planes: addrs,
            taps: [
                self.ptr(&t.ci),
                self.ptr(&t.ca),
                self.ptr(&t.ri),
                self.ptr(&t.ra),
            ],
            out: self.ptr(&self.rgb),
            nw,
            nh,
        };
        let lb = t.lb;
        layers::launch_letterbox(self, &planes, &args)?;
        self.det.frame = Staged::Device;
        Ok(lb)
    }

    /// Copies `rgb` into the pinned staging buffer and uploads it into `self.rgb` (async; the
    /// caller has synchronised the stream since the staging buffer was last used).
    pub(super) fn upload_frame(&mut self, rgb: &[u8]) -> Result<()> {
        if rgb.len() != self.rgb_host.len || rgb.len() != self.rgb.len() {
            return Err(Error::Backend(format!(
                "frame of {} bytes for a staging buffer of {}",
                rgb.len(),
                self.rgb_host.len
            )));
        }
        let dst = self.ptr(&self.rgb);
        let piece = self.frames.upload_piece;
        upload_staged(&self.stream, &mut self.rgb_host, &[rgb], dst, piece)
    }

    /// Change detection on the device, mirroring `ChangeDetector::detect`: uploads the frame
    /// (kept for `write_input`) and makes the mask (`device_mask`). The reference takes the
    /// frame's tiles in the following `write_input` (the fired tiles plus the engine's rolling
    /// refresh), or the whole frame when it was invalid.
    pub(super) fn detect_on_device(
        &mut self,
        rgb: &[u8],
        threshold: f32,
        metric: DiffMetric,
        growth: MaskGrowth,
        mask: &mut RegionMask,
    ) -> Result<()> {
        let (w, h) = (self.plan.input_w, self.plan.input_h);
        let g = self.grid;
        let on_device = rgb.is_empty() && self.det.frame == Staged::Device;
        self.det.frame = Staged::Nothing;
        if (!on_device && rgb.len() != w * h * 3) || mask.len() != g.len() {
            return Err(Error::Backend(format!(
                "change detection: image of {} bytes / mask of {} tiles for {w}x{h}x3 / {} tiles",
                rgb.len(),
                mask.len(),
                g.len()
            )));
        }
        self.ctx.bind_to_thread().map_err(drv("bind"))?;
        self.sync()?;
        if !on_device {
            self.upload_frame(rgb)?;
        }
        let force = !self.det.valid;
        if force {
            // Everything changed: the following `write_input` takes the whole frame.
            mask.fill(true);
        } else {
            self.device_mask(threshold, metric, growth, mask)?;
        }
        self.det.valid = true;
        self.det.frame = if on_device {
            Staged::Device
        } else {
            Staged::Host(rgb.as_ptr() as usize, rgb.len())
        };
        Ok(())
    }

    /// The mask of a frame against a valid device reference. Whole-tile growth scores the tiles
    /// and dilates them on the device. A margin scores cells (and, under the mean metric, the
    /// tiles too, which decide what fires), which grow into tiles on the host after the download,
    /// with the host detector's code.
    fn device_mask(
        &mut self,
        threshold: f32,
        metric: DiffMetric,
        growth: MaskGrowth,
        mask: &mut RegionMask,
    ) -> Result<()> {
        let g = self.grid;
        let cg = growth.cell_grid(&g);
        let (nc, nt) = (cg.len(), g.len());
        let raw = self.ptr(&self.det.raw);
        self.tile_diff(&cg, metric, threshold, raw)?;
        let by_tiles = cg == g;
        let radius = growth.tile_radius(g.tile);
        let tiles_fire = !by_tiles && metric == DiffMetric::Mean;
        // Cells (or tiles) first in the download, then the tiles where they are scored too.
        let first = if by_tiles && radius > 0 {
            self.launch(
                Kernel::MaskDilate,
                Dims {
                    grid: ((nt as u32).div_ceil(128), 1, 1),
                    block: (128, 1, 1),
                },
                &kargs!(
                    raw,
                    self.ptr(&self.det.dilated),
                    g.cols as i32,
                    g.rows as i32,
                    radius as i32
                ),
            )?;
            (0, nt, self.ptr(&self.det.dilated))
        } else {
            (0, nc, raw)
        };
        let mut second = None;
        if tiles_fire {
            let tiles = self.ptr(&self.det.dilated);
            self.tile_diff(&g, metric, threshold, tiles)?;
            second = Some((nc, nt, tiles));
        }
        for (at, len, src) in std::iter::once(first).chain(second) {
            // SAFETY: `raw` holds `MaskGrowth::max_cells` bytes, `dilated` one per tile, and
            // mask_host both; the host reads mask_host only after the synchronize.
            unsafe {
                cudarc::driver::result::memcpy_dtoh_async(
                    &mut self.det.mask_host.as_mut_slice()[at..at + len],
                    src,
                    self.stream.cu_stream(),
                )
            }
            .map_err(drv("mask download"))?;
        }
        self.sync()?;
        let d = &mut self.det;
        let host = d.mask_host.as_slice();
        if by_tiles {
            (0..nt).for_each(|i| mask.set(i, host[i] != 0));
            return Ok(());
        }
        let cells = d.grower.cells(&cg);
        (0..nc).for_each(|i| cells.set(i, host[i] != 0));
        let fired = tiles_fire.then(|| {
            (0..nt).for_each(|i| d.fired.set(i, host[nc + i] != 0));
            &d.fired
        });
        d.grower.grow(growth, &g, fired, mask);
        Ok(())
    }

    /// Scores each square of `grid` (tiles or cells) against the device reference; `out` gets
    /// one byte per square, set where the score passes `threshold`.
    fn tile_diff(
        &self,
        grid: &TileGrid,
        metric: DiffMetric,
        threshold: f32,
        out: u64,
    ) -> Result<()> {
        let (w, h) = (self.plan.input_w, self.plan.input_h);
        let metric = match metric {
            DiffMetric::Max => 0i32,
            DiffMetric::Mean => 1,
        };
        self.launch(
            Kernel::TileDiff,
            Dims {
                grid: (grid.len() as u32, 1, 1),
                block: (256, 1, 1),
            },
            &kargs!(
                self.ptr(&self.rgb),
                self.ptr(&self.det.reference),
                w as i32,
                h as i32,
                grid.tile as i32,
                grid.cols as i32,
                metric,
                threshold,
                0i32,
                self.ptr(&self.det.score),
                out
            ),
        )
    }
}

/// Uploads `parts`, one after another, to `dst` (device bytes at least as many) straight from
/// where they lie: page-locked blocks of [`PINNED_FRAMES`], which the element's buffer holds
/// until the frame is done. The frame synchronises the stream before it ends, on success (change
/// detection, the input's write) and on failure (`end_failed_frame`).
fn upload_direct(stream: &CudaStream, parts: &[&[u8]], dst: u64) -> Result<()> {
    let mut off = 0;
    for part in parts.iter().filter(|p| !p.is_empty()) {
        // SAFETY: `dst` holds the parts' total (the caller); each part is page-locked memory
        // that is neither freed nor rewritten before the stream passes this copy (above).
        unsafe {
            cudarc::driver::result::memcpy_htod_async(dst + off as u64, part, stream.cu_stream())
        }
        .map_err(drv("frame upload"))?;
        off += part.len();
    }
    Ok(())
}

/// Copies `parts`, one after another, into `staging` and uploads them to `dst` (device bytes at
/// least as many), in pieces of about `piece` bytes: each piece's upload runs while the next
/// piece is copied. The caller must not write `staging` again before the stream has passed
/// these uploads (a synchronisation).
fn upload_staged(
    stream: &CudaStream,
    staging: &mut Pinned<u8>,
    parts: &[&[u8]],
    dst: u64,
    piece: usize,
) -> Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    if total > staging.len {
        return Err(Error::Backend(format!(
            "{total} frame bytes for a staging buffer of {}",
            staging.len
        )));
    }
    for piece in upload_pieces(total, piece) {
        let mut off = 0;
        for part in parts {
            let (from, to) = (piece.start.max(off), piece.end.min(off + part.len()));
            if from < to {
                par_copy(
                    &mut staging.as_mut_slice()[from..to],
                    &part[from - off..to - off],
                );
            }
            off += part.len();
        }
        // SAFETY: `staging` holds `total` bytes (checked above) and `dst` as many (the caller);
        // this piece of `staging` is not written again before the stream passes this copy.
        unsafe {
            cudarc::driver::result::memcpy_htod_async(
                dst + piece.start as u64,
                &staging.as_slice()[piece],
                stream.cu_stream(),
            )
        }
        .map_err(drv("frame upload"))?;
    }
    Ok(())
}

/// Bytes of a frame upload's pieces: `REGIONDROP_CUDA_UPLOAD_PIECE_KB`, else 1 MiB (0: the frame
/// in one piece).
pub(super) fn upload_piece_bytes() -> usize {
    std::env::var("REGIONDROP_CUDA_UPLOAD_PIECE_KB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(1 << 20, |kb| kb << 10)
}

/// `total` bytes cut into pieces of about `piece` bytes (at most 16; one where `piece` is 0 or
/// the frame is no larger), together covering `0..total` in order.
fn upload_pieces(total: usize, piece: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let n = match piece {
        0 => 1,
        p => total.div_ceil(p).clamp(1, 16),
    };
    let len = total.div_ceil(n).max(1);
    (0..total)
        .step_by(len)
        .map(move |s| s..(s + len).min(total))
}

#[cfg(test)]
mod tests {
    use super::upload_pieces;

    #[test]
    fn upload_pieces_cover_the_frame_in_order() {
        for (total, piece) in [
            (0, 1 << 20),
            (5, 0),
            (6_220_800, 1 << 20),
            (3_110_400, 4096),
        ] {
            let pieces: Vec<_> = upload_pieces(total, piece).collect();
            let mut end = 0;
            for p in &pieces {
                assert_eq!(p.start, end, "{total} / {piece}: {pieces:?}");
                assert!(p.end > p.start);
                end = p.end;
            }
            assert_eq!(end, total, "{total} / {piece}");
            assert!(pieces.len() <= 16);
        }
        assert_eq!(upload_pieces(6_220_800, 1 << 20).count(), 6);
        assert_eq!(upload_pieces(100, 0).count(), 1);
    }
}
