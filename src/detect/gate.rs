//! Which anchors of a detection head can yield a box: the decoder's score test, separated from
//! the box decoding so that it can run where the outputs are. On the host it reads the output
//! tensors; the CUDA backend runs the same test on the device and downloads only the rows of the
//! anchors that pass (a few KB instead of every output), and both feed [`super::decode`]'s
//! per-anchor decoding.

use std::ops::Range;

use super::decode::DecoderKind;
use crate::tensor::Tensor;

/// Where one output tensor keeps an anchor's values: value `f` of anchor `a` is at
/// `a·anchor_stride + f·feat_stride`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowPart {
    /// Index into the plan's outputs.
    pub output: usize,
    pub feats: usize,
    pub anchor_stride: usize,
    pub feat_stride: usize,
}

/// One level of the head: its anchors, the output parts that make an anchor's row (concatenated
/// in order) and where the scores are in that row.
#[derive(Clone, Debug, PartialEq)]
pub struct GateLevel {
    pub anchors: usize,
    pub parts: Vec<RowPart>,
    /// Columns of the row that hold class scores.
    pub scores: Range<usize>,
    /// Column of an objectness value that multiplies every class score (YOLOv5).
    pub objectness: Option<usize>,
    /// Anchor grid of the level (NanoDet): network-input pixels per cell and cells per row.
    pub stride: usize,
    pub cols: usize,
}

impl RowPart {
    /// The offset of the last value of `anchors` anchors (parts and levels are never empty).
    pub fn last(&self, anchors: usize) -> usize {
        (anchors - 1) * self.anchor_stride + (self.feats - 1) * self.feat_stride
    }
}

impl GateLevel {
    pub fn row_len(&self) -> usize {
        self.parts.iter().map(|p| p.feats).sum()
    }
}

/// The score test of a decoder over all levels of the outputs, at a confidence threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct Gate {
    pub kind: DecoderKind,
    pub levels: Vec<GateLevel>,
    pub threshold: f32,
}

/// The best class of an anchor row and its score (the last of equal maxima; NaN never wins), or
/// None where the objectness or the best score is below `threshold`.
pub fn best_class(row: &[f32], level: &GateLevel, threshold: f32) -> Option<(usize, f32)> {
    let obj = level.objectness.map(|c| row[c]);
    if obj.is_some_and(|o| o < threshold) {
        return None;
    }
    let scores = &row[level.scores.clone()];
    let best = max_score(scores, obj);
    if best < threshold {
        return None;
    }
    let o = obj.unwrap_or(1.0);
    let c = scores.iter().rposition(|&v| v * o == best)?;
    Some((c, best))
}

/// The largest class score, each times the objectness where there is one (NaN never wins).
/// Without objectness it is one plain loop that vectorises.
fn max_score(scores: &[f32], obj: Option<f32>) -> f32 {
    match obj {
        None => scores.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        Some(o) => scores.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v * o)),
    }
}

/// The anchors that passed a gate: global anchor ids (the levels' anchors numbered one after the
/// other) and their rows, `row_len` values each, in any order; `order` lists them by id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Candidates {
    pub threshold: f32,
    pub row_len: usize,
    pub ids: Vec<u32>,
    pub rows: Vec<f32>,
    pub order: Vec<u32>,
    /// One row, for the host selection.
    pub scratch: Vec<f32>,
}

impl Candidates {
    pub fn clear(&mut self, threshold: f32, row_len: usize) {
        self.threshold = threshold;
        self.row_len = row_len;
        self.ids.clear();
        self.rows.clear();
        self.order.clear();
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Sorts `order` by anchor id (device selection appends in any order).
    pub fn sort(&mut self) {
        self.order.clear();
        self.order.extend(0..self.ids.len() as u32);
        let ids = &self.ids;
        self.order.sort_unstable_by_key(|&k| ids[k as usize]);
    }

    /// The row of candidate `k` (an entry of `order`).
    pub fn row(&self, k: u32) -> &[f32] {
        let k = k as usize;
        &self.rows[k * self.row_len..(k + 1) * self.row_len]
    }
}

impl Gate {
    /// The gate of decoder `kind` for outputs of these shapes, or why they do not fit it.
    pub fn new(
        kind: DecoderKind,
        shapes: &[Vec<usize>],
        in_w: usize,
        in_h: usize,
        threshold: f32,
    ) -> Result<Gate, String> {
        let levels = match kind {
            DecoderKind::YoloV8 | DecoderKind::YoloV5 => {
                let s = shapes.first().ok_or("no output")?;
                if s.len() != 3 || s[0] != 1 {
                    return Err(format!("output shape {s:?} is not [1, rows, anchors]"));
                }
                let v8 = kind == DecoderKind::YoloV8;
                let (feats, n) = if v8 { (s[1], s[2]) } else { (s[2], s[1]) };
                let first_class = if v8 { 4 } else { 5 };
                if feats <= first_class {
                    return Err(format!(
                        "output shape {s:?} has no class scores after {first_class} box values"
                    ));
                }
                let part = RowPart {
                    output: 0,
                    feats,
                    anchor_stride: if v8 { 1 } else { feats },
                    feat_stride: if v8 { n } else { 1 },
                };
                vec![GateLevel {
                    anchors: n,
                    parts: vec![part],
                    scores: first_class..feats,
                    objectness: (!v8).then_some(4),
                    stride: 1,
                    cols: 1,
                }]
            }
            DecoderKind::NanoDet => nanodet_levels(shapes, in_w, in_h)?,
        };
        for (i, l) in levels.iter().enumerate() {
            if l.anchors == 0 || l.parts.iter().any(|p| p.feats == 0) {
                return Err(format!(
                    "{kind:?} level {i}: no anchors or no values per anchor in {shapes:?}"
                ));
            }
        }
        Ok(Gate {
            kind,
            levels,
            threshold,
        })
    }

    /// The longest anchor row over the levels.
    pub fn row_len(&self) -> usize {
        self.levels
            .iter()
            .map(GateLevel::row_len)
            .max()
            .unwrap_or(0)
    }

    /// The level of global anchor id `id` and the anchor within it.
    pub fn locate(&self, id: u32) -> Option<(&GateLevel, usize)> {
        let mut a = id as usize;
        for l in &self.levels {
            if a < l.anchors {
                return Some((l, a));
            }
            a -= l.anchors;
        }
        None
    }

    /// Selects, on the host, the anchors of `outs` that pass the gate into `out` (no allocation
    /// once `out` has grown to its size).
    pub fn select<T: std::borrow::Borrow<Tensor>>(
        &self,
        outs: &[T],
        out: &mut Candidates,
    ) -> Result<(), String> {
        let row_len = self.row_len();
        out.clear(self.threshold, row_len);
        let mut row = std::mem::take(&mut out.scratch);
        row.resize(row_len, 0.0);
        let mut base = 0u32;
        for l in &self.levels {
            for p in &l.parts {
                let t = outs.get(p.output).ok_or("missing output")?.borrow();
                if p.last(l.anchors) >= t.data.len() {
                    return Err(format!(
                        "output {} has {} values, too few for {} anchors",
                        p.output,
                        t.data.len(),
                        l.anchors
                    ));
                }
            }
            // The scores (and objectness) first; the rest of the row only where they pass. Scores
            // that lie contiguous in one part without objectness (NanoDet's) are tested in place.
            let tested = l
                .objectness
                .map_or(l.scores.start, |o| o.min(l.scores.start))
                ..l.objectness
                    .map_or(l.scores.end, |o| l.scores.end.max(o + 1));
            let in_place = contiguous_scores(l);
            for a in 0..l.anchors {
                let passes = match in_place {
                    Some((p, first)) => {
                        let at = a * l.parts[p].anchor_stride + first;
                        let data = &outs[l.parts[p].output].borrow().data;
                        max_score(&data[at..at + l.scores.len()], None) >= self.threshold
                    }
                    None => {
                        fill_row(&mut row, l, outs, a, tested.clone());
                        best_class(&row[..l.row_len()], l, self.threshold).is_some()
                    }
                };
                if passes {
                    fill_row(&mut row, l, outs, a, tested.clone());
                    fill_row(&mut row, l, outs, a, 0..tested.start);
                    fill_row(&mut row, l, outs, a, tested.end..l.row_len());
                    out.ids.push(base + a as u32);
                    out.rows.extend_from_slice(&row);
                }
            }
            base += l.anchors as u32;
        }
        out.scratch = row;
        out.order.extend(0..out.ids.len() as u32);
        Ok(())
    }
}

/// Where level `l`'s scores can be read in place: the part holding them all with unit stride
/// and their first value's offset in an anchor's values (None: objectness, or spread out).
fn contiguous_scores(l: &GateLevel) -> Option<(usize, usize)> {
    if l.objectness.is_some() {
        return None;
    }
    let mut first = 0;
    for (i, p) in l.parts.iter().enumerate() {
        if l.scores.start >= first && l.scores.end <= first + p.feats {
            return (p.feat_stride == 1).then_some((i, l.scores.start - first));
        }
        first += p.feats;
    }
    None
}

/// Columns `cols` of anchor `a`'s row of level `l`, read from its parts.
fn fill_row<T: std::borrow::Borrow<Tensor>>(
    row: &mut [f32],
    l: &GateLevel,
    outs: &[T],
    a: usize,
    cols: Range<usize>,
) {
    let mut first = 0;
    for p in &l.parts {
        let (lo, hi) = (cols.start.max(first), cols.end.min(first + p.feats));
        if lo < hi {
            let data = &outs[p.output].borrow().data;
            let at = a * p.anchor_stride + (lo - first) * p.feat_stride;
            if p.feat_stride == 1 {
                row[lo..hi].copy_from_slice(&data[at..at + hi - lo]);
            } else {
                for (k, v) in row[lo..hi].iter_mut().enumerate() {
                    *v = data[at + k * p.feat_stride];
                }
            }
        }
        first += p.feats;
    }
}

/// NanoDet's levels: output i and i + n/2 are one level's class scores [1, cells, C] and box
/// distributions [1, cells, 4·bins], in either order.
fn nanodet_levels(
    shapes: &[Vec<usize>],
    in_w: usize,
    in_h: usize,
) -> Result<Vec<GateLevel>, String> {
    if shapes.len() < 2 || !shapes.len().is_multiple_of(2) || shapes.iter().any(|s| s.len() != 3) {
        return Err(format!(
            "NanoDet outputs are pairs of [1, cells, n] tensors, not {shapes:?}"
        ));
    }
    let half = shapes.len() / 2;
    (0..half)
        .map(|lvl| {
            let (a, b) = (&shapes[lvl], &shapes[lvl + half]);
            // The class tensor is the one whose width is not 4 × bins.
            let (cls, reg) = if b[2] % 4 == 0 && (a[2] % 4 != 0 || a[2] > b[2]) {
                ((lvl, a), (lvl + half, b))
            } else {
                ((lvl + half, b), (lvl, a))
            };
            let cells = cls.1[1];
            if reg.1[1] != cells {
                return Err(format!(
                    "NanoDet level {lvl}: {cells} class cells but {} box cells",
                    reg.1[1]
                ));
            }
            if cells == 0 || reg.1[2] % 4 != 0 || cls.1[2] == 0 {
                return Err(format!(
                    "NanoDet level {lvl}: shapes {:?} and {:?} are not [1, cells, C] and [1, cells, 4·bins]",
                    cls.1, reg.1
                ));
            }
            let stride = ((in_w * in_h) as f64 / cells as f64).sqrt().round() as usize;
            let part = |(output, s): (usize, &Vec<usize>)| RowPart {
                output,
                feats: s[2],
                anchor_stride: s[2],
                feat_stride: 1,
            };
            Ok(GateLevel {
                anchors: cells,
                parts: vec![part(cls), part(reg)],
                scores: 0..cls.1[2],
                objectness: None,
                stride: stride.max(1),
                cols: in_w / stride.max(1),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_class_takes_the_last_maximum_and_the_objectness() {
        let l = GateLevel {
            anchors: 1,
            parts: vec![],
            scores: 1..4,
            objectness: Some(0),
            stride: 1,
            cols: 1,
        };
        assert_eq!(best_class(&[0.5, 0.8, 0.9, 0.9], &l, 0.4), Some((2, 0.45)));
        assert_eq!(best_class(&[0.5, 0.8, 0.9, 0.9], &l, 0.5), None);
        assert_eq!(best_class(&[0.3, 1.0, 1.0, 1.0], &l, 0.35), None);
        let no_obj = GateLevel {
            objectness: None,
            ..l
        };
        assert_eq!(
            best_class(&[0.0, f32::NAN, 0.6, 0.1], &no_obj, 0.5),
            Some((1, 0.6))
        );
    }

    #[test]
    fn host_selection_reads_strided_and_contiguous_layouts_alike() {
        // YOLOv8 [1, 4+2, 3] (feature-major) and the same values anchor-major as YOLOv5 would
        // lay them out without objectness are the same rows.
        let v8 = Tensor::new(
            vec![1, 6, 3],
            vec![
                1., 2., 3., // cx
                4., 5., 6., // cy
                7., 8., 9., // w
                1., 1., 1., // h
                0.9, 0.1, 0.2, // class 0
                0.1, 0.2, 0.7, // class 1
            ],
        );
        let g = Gate::new(
            DecoderKind::YoloV8,
            std::slice::from_ref(&v8.shape),
            64,
            64,
            0.5,
        )
        .unwrap();
        let mut c = Candidates::default();
        g.select(&[&v8], &mut c).unwrap();
        assert_eq!(c.ids, vec![0, 2]);
        assert_eq!(c.row(1), &[3., 6., 9., 1., 0.2, 0.7]);
        assert_eq!(g.locate(2).map(|(_, a)| a), Some(2));
        assert!(g.locate(3).is_none());
    }

    #[test]
    fn candidates_sort_by_anchor_id_without_moving_rows() {
        let mut c = Candidates {
            row_len: 2,
            ids: vec![5, 1, 3],
            rows: vec![5., 5., 1., 1., 3., 3.],
            ..Candidates::default()
        };
        c.sort();
        assert_eq!(c.order, vec![1, 2, 0]);
        let rows: Vec<&[f32]> = c.order.iter().map(|&k| c.row(k)).collect();
        assert_eq!(rows, vec![&[1., 1.][..], &[3., 3.], &[5., 5.]]);
    }

    #[test]
    fn empty_levels_are_refused() {
        for (kind, shapes) in [
            (DecoderKind::YoloV8, vec![vec![1, 84, 0]]),
            (DecoderKind::NanoDet, vec![vec![1, 4, 3], vec![1, 4, 0]]),
        ] {
            let e = Gate::new(kind, &shapes, 8, 8, 0.3).unwrap_err();
            assert!(e.contains("no anchors or no values"), "{e}");
        }
    }

    #[test]
    fn nanodet_levels_pair_classes_with_boxes_in_either_order() {
        let shapes = vec![vec![1, 4, 3], vec![1, 16, 8], vec![1, 4, 8], vec![1, 16, 3]];
        let g = Gate::new(DecoderKind::NanoDet, &shapes, 8, 8, 0.3).unwrap();
        assert_eq!(g.levels.len(), 2);
        assert_eq!(g.levels[0].parts[0].output, 0);
        assert_eq!(g.levels[0].parts[1].output, 2);
        assert_eq!(g.levels[1].parts[0].output, 3);
        assert_eq!((g.levels[0].stride, g.levels[0].cols), (4, 2));
        assert_eq!((g.levels[1].stride, g.levels[1].cols), (2, 4));
        assert_eq!(g.row_len(), 11);
        let bad = vec![vec![1, 4, 3], vec![1, 5, 8]];
        assert!(Gate::new(DecoderKind::NanoDet, &bad, 8, 8, 0.3)
            .unwrap_err()
            .contains("4 class cells but 5 box cells"));
    }
}
