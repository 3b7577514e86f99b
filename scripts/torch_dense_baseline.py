#!/usr/bin/env python3
"""Dense PyTorch/cuDNN baseline for an ONNX CNN: interprets the ONNX graph with torch ops on the GPU
(the op set of the default NanoDet model and similar CNNs) and times whole-frame inference.

  python3 scripts/torch_dense_baseline.py MODEL.onnx FRAMES.rgb [--iters 100] [--size WxH]
      [--norm nanodet|unit] [--onnx2torch]

FRAMES.rgb holds network-size RGB frames (regiondrop-bench --save-frames). Prints one JSON line with
fp32 and fp16 ms/frame (median, CUDA events), cudnn.benchmark on, fp16 channels-last replayed
from one CUDA graph, and the largest relative output
difference of fp32 against onnxruntime CPU on the first frame when onnxruntime is installed.
"""
import argparse
import json
import statistics

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

NANODET_MEAN = np.array([103.53, 116.28, 123.675], np.float32)
NANODET_STD = np.array([57.375, 57.12, 58.395], np.float32)


def attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def build(model, device, dtype):
    g = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = numpy_helper.to_array(attrs(n)["value"])
    weights = {k: torch.from_numpy(np.array(v)).to(device) for k, v in consts.items() if v.dtype == np.float32}
    weights = {k: (v.to(dtype) if v.dim() >= 1 else v) for k, v in weights.items()}
    inits = set(consts)

    def run(x):
        env = {g.input[0].name: x}
        env.update(weights)
        for n in g.node:
            a = attrs(n)
            op = n.op_type
            ins = [env.get(i) if i else None for i in n.input]
            if op == "Constant":
                continue
            if op == "Conv":
                p = a.get("pads", [0, 0, 0, 0])
                xin = ins[0]
                if p[0] != p[2] or p[1] != p[3]:
                    xin = F.pad(xin, (p[1], p[3], p[0], p[2]))
                    p = [0, 0, 0, 0]
                y = F.conv2d(xin, ins[1], ins[2] if len(ins) > 2 else None, tuple(a.get("strides", [1, 1])),
                             (p[0], p[1]), tuple(a.get("dilations", [1, 1])), a.get("group", 1))
            elif op == "Pad":
                pads = [int(v) for v in consts[n.input[1]]]
                value = float(consts[n.input[2]].reshape(-1)[0]) if len(n.input) > 2 and n.input[2] else 0.0
                r = len(pads) // 2
                order = []
                for d in reversed(range(r)):
                    order += [pads[d], pads[d + r]]
                y = F.pad(ins[0], order, value=value)
            elif op == "LeakyRelu":
                y = F.leaky_relu(ins[0], a.get("alpha", 0.01))
            elif op == "Relu":
                y = F.relu(ins[0])
            elif op == "Sigmoid":
                y = torch.sigmoid(ins[0])
            elif op == "MaxPool":
                p = a.get("pads", [0, 0, 0, 0])
                y = F.max_pool2d(ins[0], tuple(a["kernel_shape"]), tuple(a.get("strides", [1, 1])), (p[0], p[1]))
            elif op == "Resize":
                scales = consts[n.input[2]]
                mode = a.get("mode", b"nearest").decode()
                if mode == "linear":
                    y = F.interpolate(ins[0], scale_factor=(float(scales[2]), float(scales[3])), mode="bilinear",
                                      align_corners=False)
                else:
                    y = F.interpolate(ins[0], scale_factor=(float(scales[2]), float(scales[3])), mode="nearest")
            elif op == "Concat":
                y = torch.cat([t for t in ins if t is not None], dim=a.get("axis", 0))
            elif op == "Add":
                y = ins[0] + ins[1]
            elif op == "Mul":
                y = ins[0] * ins[1]
            elif op == "Split":
                sizes = [int(v) for v in consts[n.input[1]]] if len(n.input) > 1 else a["split"]
                ys = torch.split(ins[0], sizes, dim=a.get("axis", 0))
                for name, t in zip(n.output, ys):
                    env[name] = t
                continue
            elif op == "Reshape":
                y = ins[0].reshape([int(v) for v in consts[n.input[1]]])
            elif op == "Transpose":
                y = ins[0].permute(*a["perm"])
            else:
                raise SystemExit(f"torch baseline: op {op} not handled")
            env[n.output[0]] = y
        return [env[o.name] for o in g.output]

    return run


def static_model(model, w, h):
    """The model with its input fixed at 1x3xHxW and its shape computations folded into constants
    (onnxruntime's basic, standard-op graph optimisations), so a CUDA graph can capture it."""
    import tempfile

    import onnxruntime as ort

    for d, v in zip(model.graph.input[0].type.tensor_type.shape.dim, [1, 3, h, w]):
        d.ClearField("dim_param")
        d.dim_value = v
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    with tempfile.TemporaryDirectory() as tmp:
        so.optimized_model_filepath = f"{tmp}/static.onnx"
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return onnx.load(so.optimized_model_filepath)


def builder(model, use_onnx2torch):
    """run(x) for a dtype: the ONNX graph interpreted op by op above, or converted by onnx2torch
    (any op set it knows, dynamic shapes included)."""
    if not use_onnx2torch:
        return lambda dev, dtype: build(model, dev, dtype)
    from onnx2torch import convert

    def make(dev, dtype, host_params=False):
        net = convert(model).to(dev).eval()
        if dtype != torch.float32:
            net = net.to(dtype).to(memory_format=torch.channels_last)
        if host_params:
            # Shape-like constants (integer buffers, tiny float vectors such as resize scales) back
            # on the host: the converted ops read them with .cpu()/.tolist(), which a CUDA-graph
            # capture refuses for device tensors.
            for mod in net.modules():
                for name, buf in list(mod.named_buffers(recurse=False)):
                    if not buf.is_floating_point() or (buf.dim() <= 1 and buf.numel() <= 8):
                        setattr(mod, name, buf.cpu())

        def run(x):
            y = net(x)
            return list(y) if isinstance(y, (list, tuple)) else [y]

        return run

    return make


def timed(run, xs, iters, graph=False):
    """Median ms per frame (CUDA events); graph: one capture replayed per frame."""
    with torch.no_grad():
        if not graph:
            for i in range(10):
                run(xs[i % len(xs): i % len(xs) + 1])
            torch.cuda.synchronize()
            times = []
            for i in range(iters):
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                run(xs[i % len(xs): i % len(xs) + 1])
                e.record()
                torch.cuda.synchronize()
                times.append(s.elapsed_time(e))
            return round(statistics.median(times), 3)
        static_in = xs[:1].clone().contiguous(memory_format=torch.channels_last)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(5):
                run(static_in)
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            run(static_in)
        times = []
        for i in range(iters):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            static_in.copy_(xs[i % len(xs): i % len(xs) + 1])
            g.replay()
            e.record()
            torch.cuda.synchronize()
            times.append(s.elapsed_time(e))
        return round(statistics.median(times), 3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("frames")
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--size", help="WxH of the frames, for models with dynamic input dims")
    ap.add_argument("--norm", choices=["nanodet", "unit"], default="nanodet",
                    help="nanodet: BGR mean/std of the default model; unit: RGB / 255 (YOLOv8)")
    ap.add_argument("--onnx2torch", action="store_true",
                    help="convert the model with onnx2torch instead of interpreting its ops")
    args = ap.parse_args()
    model = onnx.load(args.model)
    if args.size:
        w, h = (int(v) for v in args.size.split("x"))
        model = static_model(model, w, h)
    else:
        dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        h, w = dims[2], dims[3]
    raw = np.fromfile(args.frames, np.uint8).reshape(-1, h, w, 3)
    if args.norm == "nanodet":
        x = (raw[..., ::-1].astype(np.float32) - NANODET_MEAN) / NANODET_STD
    else:
        x = raw.astype(np.float32) / 255.0
    x = x.transpose(0, 3, 1, 2).copy()
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "cudnn": torch.backends.cudnn.version(), "frames": int(raw.shape[0]), "input": [w, h],
           "engine": "onnx2torch" if args.onnx2torch else "interpreter"}
    make = builder(model, args.onnx2torch)
    for name, dtype in [("fp32", torch.float32), ("fp16", torch.float16)]:
        run = make(dev, dtype)
        xs = torch.from_numpy(x).to(dev, dtype)
        out[f"{name}_ms"] = timed(run, xs, args.iters)
        if name == "fp32":
            try:
                import onnxruntime as ort
                sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
                ref = sess.run(None, {model.graph.input[0].name: x[:1]})
                with torch.no_grad():
                    ours = [t.float().cpu().numpy() for t in run(xs[:1])]
                out["fp32_vs_onnxruntime_max_rel"] = float(max(
                    np.abs(a - b).max() / max(np.abs(b).max(), 1e-12) for a, b in zip(ours, ref)))
            except Exception as err:  # noqa: BLE001 - the comparison is optional
                out["fp32_vs_onnxruntime_max_rel"] = None
                out["onnxruntime_error"] = str(err)[:200]
    # The strongest setting a user could pick: fp16, channels-last tensors, the whole forward pass
    # captured once into a CUDA graph and replayed per frame.
    xs = torch.from_numpy(x).to(dev, torch.float16)
    attempts = [{}] + ([{"host_params": True}] if args.onnx2torch else [])
    for extra in attempts:
        try:
            run = make(dev, torch.float16, **extra)
            out["fp16_channels_last_graph_ms"] = timed(run, xs, args.iters, graph=True)
            out.pop("fp16_channels_last_graph_error", None)
            if extra:
                out["graph_with_host_shape_constants"] = True
            break
        except Exception as err:  # noqa: BLE001 - reported, not fatal: the eager figures stand
            out["fp16_channels_last_graph_error"] = str(err)[:200]
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        main()
    except Exception as err:  # noqa: BLE001 - one JSON line either way, for the check scripts
        print(json.dumps({"error": f"{type(err).__name__}: {err}"[:300]}))
        raise SystemExit(1)
