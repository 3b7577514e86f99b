//! Channel views and element-wise ops: Split and Concat as views of shared buffers, binary ops.

use super::*;

impl Builder<'_> {
    pub(super) fn split(&mut self, n: &Node, view: View) -> Result<()> {
        let split_in = match self.val(n, 1)? {
            Some(Val::Const(t)) => Some(t),
            _ => None,
        };
        let sizes = eval::split_sizes(n, split_in.as_ref(), view.c).map_err(|e| match e {
            Error::Tensor { reason, .. } => self.err(n, reason),
            e => e,
        })?;
        if sizes.len() != n.outputs.len() {
            return Err(self.err(
                n,
                format!("split sizes {sizes:?} do not cover {} channels", view.c),
            ));
        }
        let mut off = view.c_off;
        for (name, s) in n.outputs.iter().zip(sizes) {
            self.set(
                name,
                Val::Feature {
                    view: View {
                        buf: view.buf,
                        c_off: off,
                        c: s,
                    },
                    pad: None,
                },
            );
            off += s;
        }
        Ok(())
    }

    pub(super) fn concat(&mut self, n: &Node, ins: &[Option<Val>]) -> Result<()> {
        let mut views = Vec::new();
        for v in ins.iter().flatten() {
            match self.layout_to_feature(n, v.clone())? {
                Val::Feature { view, .. } => views.push(view),
                _ => unreachable!(),
            }
        }
        let b0 = self.buffers[views[0].buf].clone();
        let total: usize = views.iter().map(|v| v.c).sum();
        let out = self.new_buffer(total, b0.h, b0.w, b0.scale);
        let mut off = 0;
        for (i, v) in views.iter().enumerate() {
            let whole = v.c_off == 0 && v.c == self.buffers[v.buf].c;
            let repeated = views.iter().filter(|u| u.buf == v.buf).count() > 1;
            let can_alias = whole
                && !repeated
                && v.buf != 0
                && !self.aliased.contains(&v.buf)
                && self.producer.contains_key(&v.buf);
            if can_alias {
                self.alias_buffer(v.buf, out.buf, off);
            } else {
                let dst = View {
                    buf: out.buf,
                    c_off: off,
                    c: v.c,
                };
                self.steps.push(Step::Layer(Layer {
                    name: format!("{}/copy{i}", n.name),
                    op: LayerOp::Gather {
                        perm: (0..v.c).collect(),
                    },
                    input: *v,
                    output: dst,
                    halo: 0,
                    global: false,
                    macs: (b0.h * b0.w * v.c) as f64,
                }));
            }
            off += v.c;
        }
        self.aliased.insert(out.buf);
        self.set_feature(&n.outputs[0], out);
        Ok(())
    }

    /// Makes every reference to buffer `from` point into `to` at channel offset `off`.
    fn alias_buffer(&mut self, from: usize, to: usize, off: usize) {
        let fix = |v: &mut View| {
            if v.buf == from {
                v.buf = to;
                v.c_off += off;
            }
        };
        for s in &mut self.steps {
            match s {
                Step::Layer(l) => {
                    fix(&mut l.input);
                    fix(&mut l.output);
                    if let LayerOp::Binary {
                        rhs: Operand::View(v),
                        ..
                    } = &mut l.op
                    {
                        fix(v);
                    }
                }
                Step::GlobalPool { input, .. } | Step::Export { input, .. } => fix(input),
                _ => {}
            }
        }
        for v in self.vals.values_mut() {
            match v {
                Val::Feature { view, .. } => fix(view),
                Val::Layout { base, .. } => fix(base),
                _ => {}
            }
        }
        self.exported.retain(|k, _| k.0 != from);
        self.producer.remove(&from);
        self.aliased.insert(from);
        self.buffers[from].c = 0;
    }

    pub(super) fn binary(&mut self, n: &Node, ins: &[Option<Val>]) -> Result<()> {
        let op = BinOp::from_onnx(&n.op).unwrap_or(BinOp::Div);
        let mut a = ins[0].clone().ok_or_else(|| self.err(n, "missing input"))?;
        let mut b = ins
            .get(1)
            .cloned()
            .flatten()
            .ok_or_else(|| self.err(n, "missing input"))?;
        let is_feat = |v: &Val| matches!(v, Val::Feature { .. } | Val::Layout { .. });
        let mut feat_input = &n.inputs[0];
        if !is_feat(&a) {
            if matches!(op, BinOp::Add | BinOp::Mul) {
                std::mem::swap(&mut a, &mut b);
                feat_input = &n.inputs[1];
            } else {
                return Err(self.unsupported(
                    n,
                    " with a non-spatial left operand and a spatial right operand",
                ));
            }
        }
        // Layouts that are not plain feature maps go to the dense path.
        let a = match self.layout_to_feature(n, a.clone()) {
            Ok(v) => v,
            Err(_) => return self.generic(n, ins),
        };
        let Val::Feature { view, .. } = a else {
            unreachable!()
        };
        let fb = self.buffers[view.buf].clone();
        let rhs = match b {
            Val::Feature { .. } | Val::Layout { .. } => {
                let bv = match self.layout_to_feature(n, b.clone()) {
                    Ok(Val::Feature { view, .. }) => view,
                    _ => return self.generic(n, ins),
                };
                let bb = &self.buffers[bv.buf];
                if bv.c != view.c || bb.h != fb.h || bb.w != fb.w {
                    return self.generic(n, ins);
                }
                Operand::View(bv)
            }
            Val::Const(t) => {
                if t.len() == 1 {
                    Operand::Channels(vec![t.data[0]; view.c])
                } else if t.len() == view.c
                    && t.shape.iter().filter(|&&d| d != 1).count() == 1
                    && (t.rank() < 3 || t.shape[t.rank() - 3] == view.c)
                {
                    Operand::Channels(t.data.clone())
                } else {
                    return self.generic(n, ins);
                }
            }
            Val::Slot(s) => {
                let sh = &self.slot_shapes[s];
                let len: usize = sh.iter().product();
                if len == view.c && (sh.len() < 3 || sh[sh.len() - 3] == view.c) || len == 1 {
                    Operand::Slot(s)
                } else {
                    return self.generic(n, ins);
                }
            }
        };
        // Multiplying, adding or subtracting constants right after a convolution or another
        // such step folds into it.
        if let Operand::Channels(v) = &rhs {
            if let Some((scale, shift)) = as_affine(op, v) {
                if self.fold_affine(&feat_input.clone(), view, &scale, &shift) {
                    self.set_feature(&n.outputs[0], view);
                    return Ok(());
                }
            }
        }
        self.simple_layer(
            n,
            view,
            LayerOp::Binary {
                op,
                rhs,
                act: Act::Identity,
            },
            0,
        )
    }
}
