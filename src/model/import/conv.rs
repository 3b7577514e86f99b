//! Convolutions: Pad, Conv and BatchNorm nodes, with pads, BatchNorm and affine constants folded
//! into the convolution that reads or produces them.

use super::*;

impl Builder<'_> {
    pub(super) fn pad(&mut self, n: &Node, view: View) -> Result<()> {
        let mode = n.string("mode", "constant");
        let pads = match n.ints("pads") {
            Some(p) => p,
            None => self.konst(n, 1, "pads")?.as_i64(),
        };
        let value = match self.val(n, 2)? {
            Some(Val::Const(t)) => t.data.first().copied().unwrap_or(0.0),
            _ => n.float("value", 0.0),
        };
        if mode != "constant" || !(value == 0.0 || value == f32::NEG_INFINITY) {
            return Err(self.unsupported(n, format!(" with mode {mode} value {value} (only constant 0 before Conv/AveragePool or -inf before MaxPool)")));
        }
        if pads.len() != 8
            || pads[0] != 0
            || pads[1] != 0
            || pads[4] != 0
            || pads[5] != 0
            || pads.iter().any(|&p| p < 0)
        {
            return Err(self.unsupported(
                n,
                format!(" with pads {pads:?} (only spatial zero padding)"),
            ));
        }
        let px = [
            pads[2] as usize,
            pads[3] as usize,
            pads[6] as usize,
            pads[7] as usize,
        ];
        self.set(
            &n.outputs[0],
            Val::Feature {
                view,
                pad: Some(PendingPad { px, value }),
            },
        );
        Ok(())
    }

    pub(super) fn conv(
        &mut self,
        n: &Node,
        input: View,
        extra_pad: Option<PendingPad>,
    ) -> Result<()> {
        let transposed = n.op == "ConvTranspose";
        let wt = self.konst(n, 1, "weight")?;
        let bias_t = match self.val(n, 2)? {
            Some(Val::Const(t)) => Some(t),
            None => None,
            Some(_) => return Err(self.err(n, "bias must be a constant")),
        };
        if wt.rank() != 4 {
            return Err(
                self.unsupported(n, format!(" with a {}-D kernel (only 2-D)", wt.rank() - 2))
            );
        }
        if wt.shape.contains(&0) {
            return Err(self.err(n, format!("weights {:?} have an empty dimension", wt.shape)));
        }
        let inb = self.buffers[input.buf].clone();
        let groups = n.group().map_err(|reason| self.err(n, reason))?;
        let (kh, kw) = (wt.shape[2], wt.shape[3]);
        let (cin, cout) = if transposed {
            (wt.shape[0], wt.shape[1] * groups)
        } else {
            (wt.shape[1] * groups, wt.shape[0])
        };
        if cin != input.c || cout % groups != 0 {
            return Err(self.err(
                n,
                format!(
                    "weights {:?} do not fit {} input channels",
                    wt.shape, input.c
                ),
            ));
        }
        let s = self.spatial_attr(n, "strides", 2, 1, 1)?;
        let d = self.spatial_attr(n, "dilations", 2, 1, 1)?;
        let (sh, sw, dh, dw) = (s[0], s[1], d[0], d[1]);
        let mut p = self.spatial_attr(n, "pads", 4, 0, 0)?;
        let auto_pad = n.string("auto_pad", "NOTSET");
        if auto_pad.starts_with("SAME") {
            if transposed {
                return Err(self.unsupported(n, " with auto_pad SAME"));
            }
            same_pads(
                &mut p,
                &auto_pad,
                [(kh, sh, dh, inb.h), (kw, sw, dw, inb.w)],
            );
        }
        if let Some(PendingPad { px: e, value }) = extra_pad {
            if transposed || value != 0.0 {
                return Err(self.unsupported(n, format!(" after a Pad of {value}")));
            }
            p[0] += e[0];
            p[1] += e[1];
            p[2] += e[2];
            p[3] += e[3];
        }
        if n.ints("output_shape").is_some() {
            return Err(self.unsupported(n, " with output_shape"));
        }
        let (oh, ow, scale) = if transposed {
            let op = self.spatial_attr(n, "output_padding", 2, 0, 0)?;
            let oh = (inb.h - 1) * sh + dh * (kh - 1) + 1 + op[0];
            let ow = (inb.w - 1) * sw + dw * (kw - 1) + 1 + op[1];
            let (oh, ow) = (
                (oh).saturating_sub(p[0] + p[2]),
                ow.saturating_sub(p[1] + p[3]),
            );
            if sh != sw || !inb.scale.is_multiple_of(sh) {
                return Err(self.err(
                    n,
                    format!("upsampling stride {sh}x{sw} does not fit the tile grid"),
                ));
            }
            (oh, ow, inb.scale / sh)
        } else {
            let oh = (inb.h + p[0] + p[2])
                .checked_sub(dh * (kh - 1) + 1)
                .map(|v| v / sh + 1);
            let ow = (inb.w + p[1] + p[3])
                .checked_sub(dw * (kw - 1) + 1)
                .map(|v| v / sw + 1);
            match (oh, ow) {
                (Some(oh), Some(ow)) if sh == sw => (oh, ow, inb.scale * sh),
                _ => {
                    return Err(
                        self.err(n, "kernel larger than the padded input, or unequal strides")
                    )
                }
            }
        };
        self.aligned(n, oh, ow, scale)?;
        let cig = cin / groups;
        let cog = cout / groups;
        let depthwise = !transposed && groups > 1 && groups == cin && cout == cin;
        let mut weights = vec![0f32; kh * kw * cig * cout];
        if depthwise {
            for c in 0..cin {
                for k in 0..kh * kw {
                    weights[k * cin + c] = wt.data[c * kh * kw + k];
                }
            }
        } else {
            let kg = kh * kw * cig;
            for g in 0..groups {
                for col in 0..cog {
                    for ci in 0..cig {
                        for k in 0..kh * kw {
                            let src = if transposed {
                                ((g * cig + ci) * cog + col) * kh * kw + k
                            } else {
                                ((g * cog + col) * cig + ci) * kh * kw + k
                            };
                            weights[g * kg * cog + (k * cig + ci) * cog + col] = wt.data[src];
                        }
                    }
                }
            }
        }
        let bias = bias_t.map(|t| t.data).unwrap_or_else(|| vec![0.0; cout]);
        if bias.len() != cout {
            return Err(self.err(
                n,
                format!("bias has {} values for {cout} output channels", bias.len()),
            ));
        }
        let halo_px_in = if transposed {
            // Spill of an input tile's outputs beyond the aligned output tile, in output pixels.
            let spill = p[0]
                .max(p[1])
                .max((dh * (kh - 1)).saturating_sub(p[0] + sh - 1));
            (spill as f64 / (sh as f64)).ceil() as usize
        } else {
            p[0].max(p[1])
                .max((dh * (kh - 1)).saturating_sub(p[0] + sh - 1))
                .max((dw * (kw - 1)).saturating_sub(p[1] + sw - 1))
        };
        let spec = ConvSpec {
            kh,
            kw,
            sh,
            sw,
            dh,
            dw,
            pad_t: p[0],
            pad_l: p[1],
            cin,
            cout,
            groups,
            transposed,
            weights,
            bias,
            act: Act::Identity,
        };
        let macs = (oh * ow * cout * kh * kw * cig) as f64;
        let output = self.new_buffer(cout, oh, ow, scale);
        self.push_layer(Layer {
            name: n.name.clone(),
            op: LayerOp::Conv(spec),
            input,
            output,
            halo: halo_tiles(halo_px_in, inb.scale),
            global: false,
            macs,
        });
        self.set_feature(&n.outputs[0], output);
        Ok(())
    }

    /// The layer writing all of `view`'s buffer, if `name` (its value) has no other consumer.
    pub(super) fn fusable_producer(&self, name: &str, view: View) -> Option<usize> {
        let b = &self.buffers[view.buf];
        if view.c_off != 0 || view.c != b.c || self.uses.get(name).copied().unwrap_or(0) != 1 {
            return None;
        }
        self.producer.get(&view.buf).copied()
    }

    pub(super) fn batchnorm(&mut self, n: &Node, view: View) -> Result<()> {
        let [gamma, beta, mean, var] =
            [1, 2, 3, 4].map(|i| self.konst(n, i, "batch-norm parameter"));
        let (gamma, beta, mean, var) = (gamma?, beta?, mean?, var?);
        let eps = n.float("epsilon", 1e-5);
        let c = view.c;
        if gamma.len() != c || beta.len() != c || mean.len() != c || var.len() != c {
            return Err(self.err(n, "parameter length differs from the channel count"));
        }
        let scale: Vec<f32> = (0..c)
            .map(|i| gamma.data[i] / (var.data[i] + eps).sqrt())
            .collect();
        let shift: Vec<f32> = (0..c)
            .map(|i| beta.data[i] - mean.data[i] * scale[i])
            .collect();
        if self.fold_affine(&n.inputs[0], view, &scale, &shift) {
            self.set_feature(&n.outputs[0], view);
            return Ok(());
        }
        self.simple_layer(
            n,
            view,
            LayerOp::Affine {
                scale,
                shift,
                act: Act::Identity,
            },
            0,
        )
    }

    /// Folds `x·scale + shift` (per channel) into the layer producing `name` (`view`): a
    /// convolution or an affine layer without activation, or an element-wise multiply, add or
    /// subtract by constants without activation, when nothing else reads its output. Whether it
    /// did.
    pub(super) fn fold_affine(
        &mut self,
        name: &str,
        view: View,
        scale: &[f32],
        shift: &[f32],
    ) -> bool {
        let Some(si) = self.fusable_producer(name, view) else {
            return false;
        };
        let Step::Layer(l) = &mut self.steps[si] else {
            return false;
        };
        let c = scale.len();
        match &mut l.op {
            LayerOp::Conv(cs) if cs.act == Act::Identity && cs.cout == c => {
                let n_out = cs.cout;
                let cols = if cs.depthwise() {
                    n_out
                } else {
                    cs.n_per_group()
                };
                let depthwise = cs.depthwise();
                let per_group = cs.k_per_group() * cols;
                for (i, wv) in cs.weights.iter_mut().enumerate() {
                    let co = if depthwise {
                        i % n_out
                    } else {
                        (i / per_group) * cols + i % cols
                    };
                    *wv *= scale[co];
                }
                for co in 0..n_out {
                    cs.bias[co] = cs.bias[co] * scale[co] + shift[co];
                }
                true
            }
            LayerOp::Affine {
                scale: s0,
                shift: t0,
                act: Act::Identity,
            } if s0.len() == c => {
                for i in 0..c {
                    s0[i] *= scale[i];
                    t0[i] = t0[i] * scale[i] + shift[i];
                }
                true
            }
            LayerOp::Binary {
                op: op0,
                rhs: Operand::Channels(v),
                act: Act::Identity,
            } if v.len() == c => {
                // x op0 v, then the new step: one affine layer.
                let Some((s0, t0)) = as_affine(*op0, v) else {
                    return false;
                };
                l.op = LayerOp::Affine {
                    scale: (0..c).map(|i| s0[i] * scale[i]).collect(),
                    shift: (0..c).map(|i| t0[i] * scale[i] + shift[i]).collect(),
                    act: Act::Identity,
                };
                true
            }
            _ => false,
        }
    }
}
