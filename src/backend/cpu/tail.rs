//! The detection head's rearrangements on the CPU. An Export (NHWC feature view → NCHW slot)
//! whose slot only feeds one Rearrange (NCHW → the head's output layout, usually back to
//! pixel-major) is folded into it: the rearrangement reads the feature buffer directly, as runs
//! of consecutive values (often one run per pixel, or one for the whole map).

use crate::mask::TileGrid;
use crate::model::plan::{FeatureBuf, LayerOp, Operand, Plan, Step, View};

/// How one Rearrange step runs.
pub enum Rearrange {
    /// out[j] = slot[index[j]].
    FromSlot(Vec<u32>),
    /// out[dst..dst + len] = buffer[src..src + len] for each run.
    FromBuffer { buf: usize, runs: Vec<Run> },
    /// out[p·C + c] = the view's channel c at pixel p: the feature map in its own layout, so
    /// only the tiles the folded Export step lists (those that changed) are copied.
    PixelMajor { view: View, export: usize },
    /// out[c·HW + p] = the view's channel c at pixel p: what the Export step itself writes (the
    /// rearrangement only reshapes), so it exports the changed tiles straight into the output.
    ChannelMajor { view: View, export: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub src: u32,
    pub dst: u32,
    pub len: u32,
}

/// Per step: how each Rearrange runs, and which Export steps were folded (and are skipped).
pub fn lower(plan: &Plan) -> (Vec<Option<Rearrange>>, Vec<bool>) {
    let mut readers = vec![0usize; plan.slots.len()];
    for (_, s) in &plan.outputs {
        readers[*s] += 1;
    }
    for step in &plan.steps {
        match step {
            Step::Rearrange { input, .. } => readers[*input] += 1,
            Step::Generic { inputs, .. } => inputs.iter().flatten().for_each(|&i| readers[i] += 1),
            Step::Layer(l) => {
                if let LayerOp::Binary {
                    rhs: Operand::Slot(s),
                    ..
                } = &l.op
                {
                    readers[*s] += 1;
                }
            }
            _ => {}
        }
    }
    let mut skip = vec![false; plan.steps.len()];
    let mut exporter = vec![None; plan.slots.len()];
    let mut out = Vec::with_capacity(plan.steps.len());
    for (si, step) in plan.steps.iter().enumerate() {
        out.push(match step {
            Step::Export { slot, .. } => {
                exporter[*slot] = Some(si);
                None
            }
            Step::Rearrange { input, index, .. } => {
                let idx: Vec<u32> = index.data.iter().map(|&i| i as u32).collect();
                match exporter[*input] {
                    Some(e) if readers[*input] == 1 => {
                        let Step::Export { input: view, .. } = &plan.steps[e] else {
                            unreachable!("exporter is an Export step")
                        };
                        let b = &plan.buffers[view.buf];
                        let hw = b.h * b.w;
                        // Slot element c·hw + p is buffer element p·C + c_off + c.
                        let src = idx.iter().map(|&i| {
                            let (c, p) = (i as usize / hw, i as usize % hw);
                            (p * b.c + view.c_off + c) as u32
                        });
                        skip[e] = true;
                        let pixel_major = idx.len() == hw * view.c
                            && src.clone().enumerate().all(|(j, s)| {
                                s as usize == (j / view.c) * b.c + view.c_off + j % view.c
                            });
                        let reshape_only = idx.len() == hw * view.c
                            && idx.iter().enumerate().all(|(j, &i)| i as usize == j);
                        Some(if pixel_major {
                            Rearrange::PixelMajor {
                                view: *view,
                                export: e,
                            }
                        } else if reshape_only {
                            Rearrange::ChannelMajor {
                                view: *view,
                                export: e,
                            }
                        } else {
                            Rearrange::FromBuffer {
                                buf: view.buf,
                                runs: runs(src),
                            }
                        })
                    }
                    _ => Some(Rearrange::FromSlot(idx)),
                }
            }
            _ => None,
        });
    }
    (out, skip)
}

/// Groups source offsets into runs of consecutive values.
fn runs(src: impl Iterator<Item = u32>) -> Vec<Run> {
    let mut v: Vec<Run> = Vec::new();
    for (dst, s) in src.enumerate() {
        match v.last_mut() {
            Some(r) if r.src + r.len == s => r.len += 1,
            _ => v.push(Run {
                src: s,
                dst: dst as u32,
                len: 1,
            }),
        }
    }
    v
}

/// Runs a folded rearrangement.
pub fn copy_runs(dst: &mut [f32], src: &[f32], runs: &[Run]) {
    for r in runs {
        let (s, d, n) = (r.src as usize, r.dst as usize, r.len as usize);
        dst[d..d + n].copy_from_slice(&src[s..s + n]);
    }
}

/// Copies the given tiles of a pixel-major rearrangement.
pub fn copy_tiles(
    dst: &mut [f32],
    src: &[f32],
    b: &FeatureBuf,
    view: View,
    grid: &TileGrid,
    tiles: &[u32],
) {
    let c = view.c;
    for &t in tiles {
        let (x0, y0, x1, y1) = grid.rect(t as usize, b.scale, b.w, b.h);
        for y in y0..y1 {
            let (p0, p1) = (y * b.w + x0, y * b.w + x1);
            if c == b.c {
                dst[p0 * c..p1 * c].copy_from_slice(&src[p0 * c..p1 * c]);
                continue;
            }
            for p in p0..p1 {
                dst[p * c..(p + 1) * c].copy_from_slice(&src[p * b.c + view.c_off..][..c]);
            }
        }
    }
}

/// Copies the given tiles of a view channel-major (NCHW), as an Export step does.
pub fn copy_tiles_channel_major(
    dst: &mut [f32],
    src: &[f32],
    b: &FeatureBuf,
    view: View,
    grid: &TileGrid,
    tiles: &[u32],
) {
    let hw = b.h * b.w;
    for &t in tiles {
        let (x0, y0, x1, y1) = grid.rect(t as usize, b.scale, b.w, b.h);
        for y in y0..y1 {
            for x in x0..x1 {
                let p = y * b.w + x;
                let px = &src[p * b.c + view.c_off..][..view.c];
                for (c, &v) in px.iter().enumerate() {
                    dst[c * hw + p] = v;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_offsets_merge_into_runs() {
        let r = runs([4, 5, 6, 10, 11, 0].into_iter());
        assert_eq!(
            r,
            vec![
                Run {
                    src: 4,
                    dst: 0,
                    len: 3
                },
                Run {
                    src: 10,
                    dst: 3,
                    len: 2
                },
                Run {
                    src: 0,
                    dst: 5,
                    len: 1
                },
            ]
        );
        let mut out = [0f32; 6];
        let src: Vec<f32> = (0..12).map(|i| i as f32).collect();
        copy_runs(&mut out, &src, &r);
        assert_eq!(out, [4.0, 5.0, 6.0, 10.0, 11.0, 0.0]);
    }
}
