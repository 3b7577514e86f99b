//! The dense tail: rearrangements of feature maps, runtime tensors (slots) and generic ONNX ops.

use super::*;

impl Builder<'_> {
    /// Starts or extends a rearrangement chain on a feature map.
    pub(super) fn rearrange(&mut self, n: &Node, ins: &[Option<Val>]) -> Result<()> {
        let (base, index) = match ins[0].clone().unwrap() {
            Val::Feature { view, .. } => {
                let b = &self.buffers[view.buf];
                let len = view.c * b.h * b.w;
                if len >= 1 << 24 {
                    return self.generic(n, ins);
                }
                (
                    view,
                    Tensor::new(
                        vec![1, view.c, b.h, b.w],
                        (0..len).map(|i| i as f32).collect(),
                    ),
                )
            }
            Val::Layout { base, index } => (base, index),
            _ => unreachable!(),
        };
        let mut args: Vec<Option<&Tensor>> = vec![Some(&index)];
        let consts: Vec<Option<Tensor>> = ins[1..]
            .iter()
            .map(|v| match v {
                Some(Val::Const(t)) => Some(t.clone()),
                _ => None,
            })
            .collect();
        if ins[1..]
            .iter()
            .zip(&consts)
            .any(|(v, c)| v.is_some() && c.is_none())
        {
            return self.generic(n, ins);
        }
        args.extend(consts.iter().map(|c| c.as_ref()));
        let outs =
            eval::eval(&self.with_opset(n), &args).map_err(|e| self.err(n, e.to_string()))?;
        for (name, t) in n.outputs.iter().zip(outs) {
            self.set(name, Val::Layout { base, index: t });
        }
        Ok(())
    }

    /// Turns a layout that is a channel selection of its base into a feature view (or a gather layer).
    pub(super) fn layout_to_feature(&mut self, n: &Node, v: Val) -> Result<Val> {
        let (base, index) = match v {
            Val::Layout { base, index } => (base, index),
            other => return Ok(other),
        };
        let b = self.buffers[base.buf].clone();
        let hw = b.h * b.w;
        let not_plain = || {
            self.unsupported(
                n,
                " on a rearranged feature map that is not a channel selection",
            )
        };
        if index.rank() != 4
            || index.shape[0] != 1
            || index.shape[2] != b.h
            || index.shape[3] != b.w
        {
            return Err(not_plain());
        }
        let c = index.shape[1];
        let mut perm = Vec::with_capacity(c);
        for ch in 0..c {
            let first = index.data[ch * hw] as usize;
            if !first.is_multiple_of(hw) {
                return Err(not_plain());
            }
            let src_c = first / hw;
            if (0..hw).any(|p| index.data[ch * hw + p] as usize != src_c * hw + p) {
                return Err(not_plain());
            }
            perm.push(src_c);
        }
        let contiguous = perm.windows(2).all(|w| w[1] == w[0] + 1);
        if contiguous {
            return Ok(Val::Feature {
                view: View {
                    buf: base.buf,
                    c_off: base.c_off + perm[0],
                    c,
                },
                pad: None,
            });
        }
        let output = self.new_buffer(c, b.h, b.w, b.scale);
        self.push_layer(Layer {
            name: format!("{}/shuffle", n.name),
            op: LayerOp::Gather { perm },
            input: base,
            output,
            halo: 0,
            global: false,
            macs: (hw * c) as f64,
        });
        Ok(Val::Feature {
            view: output,
            pad: None,
        })
    }

    /// The slot holding value `name` on the dense path, adding export steps as needed.
    pub(super) fn materialize(&mut self, name: &str, ctx: &str) -> Result<usize> {
        let v = self
            .vals
            .get(name)
            .cloned()
            .ok_or_else(|| Error::BadModel {
                path: self.g.path.clone(),
                reason: format!("{ctx} `{name}` is not produced by any node"),
            })?;
        self.materialize_val(v)
    }

    fn materialize_val(&mut self, v: Val) -> Result<usize> {
        Ok(match v {
            Val::Const(t) => self.new_slot(t, true),
            Val::Slot(s) => s,
            Val::Feature { view, .. } => self.export(view),
            Val::Layout { base, index } => {
                let src = self.export(base);
                let out = self.new_slot(Tensor::zeros(index.shape.clone()), false);
                self.steps.push(Step::Rearrange {
                    input: src,
                    index,
                    output: out,
                });
                out
            }
        })
    }

    fn export(&mut self, view: View) -> usize {
        let key = (view.buf, view.c_off, view.c);
        if let Some(&s) = self.exported.get(&key) {
            return s;
        }
        let b = &self.buffers[view.buf];
        let slot = self.new_slot(Tensor::zeros(vec![1, view.c, b.h, b.w]), false);
        self.steps.push(Step::Export { input: view, slot });
        self.exported.insert(key, slot);
        slot
    }

    /// Runs the node densely on the tensor path.
    pub(super) fn generic(&mut self, n: &Node, ins: &[Option<Val>]) -> Result<()> {
        if !is_generic(&n.op) {
            return Err(self.unsupported(n, ""));
        }
        if ins
            .iter()
            .flatten()
            .any(|v| matches!(v, Val::Feature { pad: Some(_), .. }))
        {
            return Err(self.unsupported(n, " after a Pad"));
        }
        let mut slots = Vec::new();
        for v in ins {
            slots.push(match v {
                None => None,
                Some(v) => Some(self.materialize_val(v.clone())?),
            });
        }
        let node = self.with_opset(n);
        let args: Vec<Option<&Tensor>> = slots.iter().map(|s| s.map(|i| &self.dry[i])).collect();
        let outs = eval::eval(&node, &args).map_err(|e| self.err(n, e.to_string()))?;
        let mut out_slots = Vec::new();
        for (name, t) in n.outputs.iter().zip(outs) {
            let s = self.new_slot(t, false);
            self.set(name, Val::Slot(s));
            out_slots.push(s);
        }
        self.steps.push(Step::Generic {
            node,
            inputs: slots,
            outputs: out_slots,
        });
        Ok(())
    }
}
