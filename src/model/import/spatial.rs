//! Tile-wise layers other than convolutions: activations, pooling and resizing.

use super::*;

impl Builder<'_> {
    /// A layer with one spatial input and a new output buffer of the same shape.
    pub(super) fn simple_layer(
        &mut self,
        n: &Node,
        input: View,
        op: LayerOp,
        halo: usize,
    ) -> Result<()> {
        let b = self.buffers[input.buf].clone();
        let output = self.new_buffer(input.c, b.h, b.w, b.scale);
        let global = matches!(
            op,
            LayerOp::Binary {
                rhs: Operand::Slot(_),
                ..
            }
        );
        self.push_layer(Layer {
            name: n.name.clone(),
            op,
            input,
            output,
            halo,
            global,
            macs: b.h as f64 * b.w as f64 * input.c as f64,
        });
        self.set_feature(&n.outputs[0], output);
        Ok(())
    }

    pub(super) fn activation(&mut self, n: &Node, view: View, act: Act) -> Result<()> {
        if let Some(si) = self.fusable_producer(&n.inputs[0], view) {
            if let Step::Layer(l) = &mut self.steps[si] {
                if let Some(a) = l.act_mut() {
                    if *a == Act::Identity {
                        *a = act;
                        self.set_feature(&n.outputs[0], view);
                        return Ok(());
                    }
                }
            }
        }
        self.simple_layer(n, view, LayerOp::Unary(act), 0)
    }

    pub(super) fn pool(
        &mut self,
        n: &Node,
        input: View,
        extra_pad: Option<PendingPad>,
    ) -> Result<()> {
        match n.ints("kernel_shape") {
            None => return Err(self.err(n, "kernel_shape is missing")),
            Some(k) if k.len() != 2 => return Err(self.unsupported(n, " (only 2-D pooling)")),
            Some(_) => {}
        }
        let k = self.spatial_attr(n, "kernel_shape", 2, 1, 1)?;
        let (kh, kw) = (k[0], k[1]);
        let s = self.spatial_attr(n, "strides", 2, 1, 1)?;
        let (sh, sw) = (s[0], s[1]);
        if n.ints("dilations")
            .is_some_and(|d| d.iter().any(|&v| v != 1))
        {
            return Err(self.unsupported(n, " with dilations"));
        }
        let inb = self.buffers[input.buf].clone();
        let mut p = self.spatial_attr(n, "pads", 4, 0, 0)?;
        let auto_pad = n.string("auto_pad", "NOTSET");
        if auto_pad.starts_with("SAME") {
            same_pads(&mut p, &auto_pad, [(kh, sh, 1, inb.h), (kw, sw, 1, inb.w)]);
        }
        let kind = if n.op == "MaxPool" {
            PoolKind::Max
        } else {
            PoolKind::Avg(
                n.int("count_include_pad", 0) != 0 || extra_pad.is_some_and(|p| p.value == 0.0),
            )
        };
        if let Some(PendingPad { px: e, value }) = extra_pad {
            let fits = match kind {
                PoolKind::Max => value == f32::NEG_INFINITY,
                PoolKind::Avg(_) => value == 0.0,
            };
            if !fits
                || (kind != PoolKind::Max
                    && n.int("count_include_pad", 0) == 0
                    && p.iter().any(|&v| v > 0))
            {
                return Err(self.unsupported(n, format!(" after a Pad of {value}")));
            }
            for i in 0..4 {
                p[i] += e[i];
            }
        }
        let ceil = n.int("ceil_mode", 0) != 0;
        let out = |len: usize, pa: usize, pb: usize, k: usize, s: usize| {
            let span = (len + pa + pb).saturating_sub(k);
            if ceil {
                span.div_ceil(s) + 1
            } else {
                span / s + 1
            }
        };
        let oh = out(inb.h, p[0], p[2], kh, sh);
        let ow = out(inb.w, p[1], p[3], kw, sw);
        if sh != sw {
            return Err(self.unsupported(n, " with unequal strides"));
        }
        let scale = inb.scale * sh;
        self.aligned(n, oh, ow, scale)?;
        let halo_px = p[0]
            .max(p[1])
            .max((kh - 1).saturating_sub(p[0] + sh - 1))
            .max((kw - 1).saturating_sub(p[1] + sw - 1));
        let output = self.new_buffer(input.c, oh, ow, scale);
        self.push_layer(Layer {
            name: n.name.clone(),
            op: LayerOp::Pool(PoolSpec {
                kind,
                kh,
                kw,
                sh,
                sw,
                pad_t: p[0],
                pad_l: p[1],
            }),
            input,
            output,
            halo: halo_tiles(halo_px, inb.scale),
            global: false,
            macs: (oh * ow * input.c * kh * kw) as f64,
        });
        self.set_feature(&n.outputs[0], output);
        Ok(())
    }

    pub(super) fn resize(&mut self, n: &Node, input: View) -> Result<()> {
        let inb = self.buffers[input.buf].clone();
        let scales: Option<Vec<f32>> = if n.op == "Upsample" {
            n.floats("scales")
                .map(Ok)
                .or_else(|| Some(self.konst(n, 1, "scales").map(|t| t.data)))
                .transpose()?
        } else {
            let sc = if self.g.opset <= 10 { 1 } else { 2 };
            match self.val(n, sc)? {
                Some(Val::Const(t)) if !t.is_empty() => Some(t.data),
                Some(Val::Const(_)) | None => None,
                Some(_) => return Err(self.err(n, "scales must be a constant")),
            }
        };
        let (oh, ow) = if let Some(s) = &scales {
            if s.len() != 4 || s[0] != 1.0 || s[1] != 1.0 {
                return Err(
                    self.unsupported(n, format!(" with scales {s:?} (only spatial scaling)"))
                );
            }
            (
                (inb.h as f32 * s[2]).floor() as usize,
                (inb.w as f32 * s[3]).floor() as usize,
            )
        } else {
            let sizes = self.konst(n, 3, "sizes")?.as_i64();
            if sizes.len() != 4 {
                return Err(self.unsupported(n, " with non-4-D sizes"));
            }
            (sizes[2] as usize, sizes[3] as usize)
        };
        let up = oh >= inb.h && oh % inb.h == 0 && ow % inb.w == 0 && oh / inb.h == ow / inb.w;
        let down = oh > 0
            && ow > 0
            && oh < inb.h
            && inb.h.is_multiple_of(oh)
            && inb.w.is_multiple_of(ow)
            && inb.h / oh == inb.w / ow;
        if !(up || down) {
            return Err(self.unsupported(
                n,
                format!(
                    " from {}x{} to {ow}x{oh} (only equal integer up- or downscaling)",
                    inb.w, inb.h
                ),
            ));
        }
        let out_scale = if up {
            let f = oh / inb.h;
            if !inb.scale.is_multiple_of(f) {
                return Err(self.err(n, "upscaling beyond the input resolution"));
            }
            inb.scale / f
        } else {
            inb.scale * (inb.h / oh)
        };
        let mode = n.string("mode", "nearest");
        let linear = match mode.as_str() {
            "nearest" => false,
            "linear" | "bilinear" => true,
            m => return Err(self.unsupported(n, format!(" with mode {m}"))),
        };
        let default_ct = if n.op == "Upsample" || self.g.opset <= 10 {
            "asymmetric"
        } else {
            "half_pixel"
        };
        let ct = n.string("coordinate_transformation_mode", default_ct);
        let nearest_mode = n.string(
            "nearest_mode",
            if n.op == "Upsample" {
                "floor"
            } else {
                "round_prefer_floor"
            },
        );
        // ONNX maps coordinates with the given scale, which may differ from out/in after flooring.
        let (sy, sx) = match &scales {
            Some(s) => (s[2] as f64, s[3] as f64),
            None => (oh as f64 / inb.h as f64, ow as f64 / inb.w as f64),
        };
        let y = resize_taps(inb.h, oh, sy, linear, &ct, &nearest_mode)
            .map_err(|e| self.unsupported(n, e))?;
        let x = resize_taps(inb.w, ow, sx, linear, &ct, &nearest_mode)
            .map_err(|e| self.unsupported(n, e))?;
        let reach = |t: &ResizeTaps| {
            let len_in = if std::ptr::eq(t, &y) { inb.h } else { inb.w };
            let len_out = t.i0.len();
            (0..len_out)
                .map(|o| {
                    // The input pixel aligned with output pixel o on the tile grid.
                    let a = (o * len_in / len_out) as i64;
                    let d0 = (t.i0[o] as i64 - a).abs();
                    let d1 = if t.frac[o] != 0.0 {
                        (t.i1[o] as i64 - a).abs()
                    } else {
                        0
                    };
                    d0.max(d1) as usize
                })
                .max()
                .unwrap_or(0)
        };
        let halo_px = reach(&y).max(reach(&x));
        let output = self.new_buffer(input.c, oh, ow, out_scale);
        self.push_layer(Layer {
            name: n.name.clone(),
            op: LayerOp::Resize { y, x },
            input,
            output,
            halo: halo_tiles(halo_px, inb.scale),
            global: false,
            macs: (oh * ow * input.c) as f64,
        });
        self.set_feature(&n.outputs[0], output);
        Ok(())
    }
}

fn resize_taps(
    len: usize,
    out: usize,
    s: f64,
    linear: bool,
    ct: &str,
    nearest_mode: &str,
) -> std::result::Result<ResizeTaps, String> {
    let mut t = ResizeTaps {
        i0: Vec::with_capacity(out),
        i1: Vec::with_capacity(out),
        frac: Vec::with_capacity(out),
    };
    for o in 0..out {
        let of = o as f64;
        let x = match ct {
            "half_pixel" => (of + 0.5) / s - 0.5,
            "pytorch_half_pixel" => {
                if out > 1 {
                    (of + 0.5) / s - 0.5
                } else {
                    0.0
                }
            }
            // ONNX uses the unrounded resized length here.
            "align_corners" => {
                let out_f = len as f64 * s;
                if out_f > 1.0 {
                    of * (len as f64 - 1.0) / (out_f - 1.0)
                } else {
                    0.0
                }
            }
            "asymmetric" => of / s,
            "tf_half_pixel_for_nn" => (of + 0.5) / s,
            m => return Err(format!(" with coordinate_transformation_mode {m}")),
        };
        let last = len as f64 - 1.0;
        if linear {
            let xc = x.clamp(0.0, last);
            let i0 = xc.floor();
            t.i0.push(i0 as u32);
            t.i1.push((i0 + 1.0).min(last) as u32);
            t.frac.push((xc - i0) as f32);
        } else {
            let i = match nearest_mode {
                "round_prefer_floor" => {
                    if x.fract() == 0.5 {
                        x.floor()
                    } else {
                        x.round()
                    }
                }
                "round_prefer_ceil" => x.round(),
                "floor" => x.floor(),
                "ceil" => x.ceil(),
                m => return Err(format!(" with nearest_mode {m}")),
            };
            let i = i.clamp(0.0, last) as u32;
            t.i0.push(i);
            t.i1.push(i);
            t.frac.push(0.0);
        }
    }
    Ok(t)
}
