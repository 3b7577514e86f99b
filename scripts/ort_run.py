#!/usr/bin/env python3
"""Run an ONNX model with onnxruntime (CPUExecutionProvider) or OpenVINO (CPU) on raw
float32 input.

Used by the Rust tests and benchmark: onnxruntime is the reference implementation, and both
are the dense engines a user would pick instead of ours, timed beside it.

  .venv/bin/python scripts/ort_run.py --model M.onnx --input in.f32 --shape 1,3,416,416 \\
      --threads 2 --out OUTDIR [--repeat N] [--input-name NAME] \\
      [--engine onnxruntime|openvino] [--precision default|f32|bf16]

Input: a raw little-endian float32 file for the model's (first) input, with --shape
giving one frame's shape. Its size must be a multiple of one frame's element count.

  * One frame: 1 warm-up run, then --repeat timed runs (default 1). Each output i is
    written as OUTDIR/out{i}.f32 (raw float32, little-endian, C order).
  * Several frames (file size = F x frame size, F > 1): the frames are run one after
    another, after 1 warm-up run on frame 0; every frame is run --repeat times and each
    run is timed. Output i of frame f is written as OUTDIR/out{i}_{f}.f32 (f from 0).
    ms_all then holds F x repeat entries (frame-major), ms_median their median, and
    meta.json also has "frames": F and "ms_per_frame": [median of each frame].

OUTDIR/meta.json:
  {"outputs": [{"name": ..., "shape": [...]}, ...],   # in the model's output order
   "ms_median": float, "ms_all": [...], "threads": N, "frames": F,
   "engine": ..., "version": ..., "precision": "f32" or "bf16", ...}

  .venv/bin/python scripts/ort_run.py --model M.onnx --shape 1,3,416,416 --threads 2 --serve

Serve mode times single runs for a caller that interleaves them with its own work (the
benchmark: our dense frame, onnxruntime on the same frame, our sparse frame, ...). It prints
"ready ENGINE VERSION PRECISION" once the session is loaded; then for each request line "run" on stdin followed by one
frame's raw float32 bytes, it runs the frame once and answers one line with the milliseconds of
that run (session.run only). End of input ends it.

onnxruntime: CPUExecutionProvider, intra_op_num_threads=--threads, inter_op_num_threads=1,
ORT_SEQUENTIAL execution, full graph optimisation (ORT's default); always f32.
OpenVINO: the CPU device, PERFORMANCE_HINT=LATENCY, INFERENCE_NUM_THREADS=--threads, and the
inference precision the plugin picks (bf16 on CPUs with AMX or AVX512-BF16, else f32) unless --precision
names one; the input is reshaped to --shape.
Outputs that are not float32 are converted to float32 before writing.

Exit status: 0 on success, 2 on bad arguments / missing files / wrong input size,
1 if the engine itself fails.
"""
import argparse
import json
import os
import statistics
import sys
import time


def die(msg, code=2):
    print(f"ort_run.py: error: {msg}", file=sys.stderr)
    sys.exit(code)


def parse_shape(s):
    try:
        dims = [int(x) for x in s.replace("x", ",").split(",") if x.strip() != ""]
    except ValueError:
        die(f"bad --shape {s!r}: expected comma-separated integers like 1,3,416,416")
    if not dims or any(d <= 0 for d in dims):
        die(f"bad --shape {s!r}: dimensions must be positive")
    return dims


class Session:
    """One loaded model: `run(x)` returns its outputs (numpy arrays, in the model's output
    order); `out_names`, `input_name` and `version` describe it."""


def open_onnxruntime(args, shape):
    try:
        import onnxruntime as ort
    except ImportError as e:
        die(f"onnxruntime not importable ({e}); run scripts/setup-assets.sh and use .venv/bin/python")

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(args.model, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        die(f"onnxruntime could not load {args.model}: {e}", 1)

    inputs = sess.get_inputs()
    inp = pick_input([(i.name, i.shape) for i in inputs], args.input_name)
    check_shape(inp, shape)
    s = Session()
    s.input_name = inp[0]
    s.out_names = [o.name for o in sess.get_outputs()]
    s.run = lambda x: sess.run(s.out_names, {s.input_name: x})
    s.version = ort.__version__
    s.precision = "f32"
    return s


def open_openvino(args, shape):
    try:
        import openvino as ov
    except ImportError as e:
        die(f"openvino not importable ({e}); run scripts/setup-assets.sh and use .venv/bin/python")

    core = ov.Core()
    try:
        model = core.read_model(args.model)
    except Exception as e:  # noqa: BLE001
        die(f"openvino could not read {args.model}: {e}", 1)
    dims = lambda p: [d.get_length() if d.is_static else None for d in p]  # noqa: E731
    inp = pick_input([(i.get_any_name(), dims(i.get_partial_shape())) for i in model.inputs],
                     args.input_name)
    check_shape(inp, shape)
    # A user's first choice: the latency hint, with the inference precision the CPU plugin picks
    # (bf16 where the CPU has AMX, else f32) unless --precision names one.
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": args.threads}
    if args.precision != "default":
        config["INFERENCE_PRECISION_HINT"] = args.precision
    try:
        model.reshape({inp[0]: shape})
        compiled = core.compile_model(model, "CPU", config)
    except Exception as e:  # noqa: BLE001
        die(f"openvino could not compile {args.model}: {e}", 1)
    request = compiled.create_infer_request()
    outputs = compiled.outputs
    s = Session()
    s.input_name = inp[0]
    s.out_names = [o.get_any_name() for o in outputs]

    def run(x):
        result = request.infer({s.input_name: x})
        return [result[o] for o in outputs]

    s.run = run
    s.version = ov.__version__
    s.precision = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    return s


def pick_input(inputs, name):
    """The (name, dims) to feed: `name`, else the first of `inputs`."""
    if name is not None:
        names = [n for n, _ in inputs]
        if name not in names:
            die(f"model has no input {name!r} (inputs: {names})")
        return next(i for i in inputs if i[0] == name)
    if len(inputs) != 1:
        print(f"ort_run.py: warning: model has {len(inputs)} inputs, feeding the first "
              f"({inputs[0][0]})", file=sys.stderr)
    return inputs[0]


def check_shape(inp, shape):
    """The given shape against the model's declared static dims."""
    name, mshape = inp
    if len(mshape) != len(shape) or any(isinstance(m, int) and m != s for m, s in zip(mshape, shape)):
        die(f"--shape {shape} does not match the model input {name!r} shape {mshape}")


def open_session(args, shape):
    """The engine's session for the batch and serve modes, and numpy."""
    import numpy as np
    opener = open_openvino if args.engine == "openvino" else open_onnxruntime
    return np, opener(args, shape)


def serve(args, shape, n):
    np, sess = open_session(args, shape)
    stdin, stdout = sys.stdin.buffer, sys.stdout
    print(f"ready {args.engine} {sess.version} {sess.precision}", file=stdout, flush=True)
    while True:
        line = stdin.readline()
        if not line:
            return
        if line.strip() != b"run":
            die(f"serve: expected 'run', got {line[:40]!r}")
        raw = stdin.read(n * 4)
        if len(raw) != n * 4:
            die(f"serve: frame of {len(raw)} bytes, expected {n * 4}")
        x = np.frombuffer(raw, dtype="<f4").reshape(shape)
        t0 = time.perf_counter()
        try:
            sess.run(x)
        except Exception as e:  # noqa: BLE001
            die(f"{args.engine} run failed: {e}", 1)
        print(f"{(time.perf_counter() - t0) * 1000.0:.4f}", file=stdout, flush=True)


def main():
    ap = argparse.ArgumentParser(
        prog="ort_run.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="ONNX model file")
    ap.add_argument("--input", help="raw little-endian float32 input file (not with --serve)")
    ap.add_argument("--shape", required=True, help="one frame's input shape, e.g. 1,3,416,416")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    ap.add_argument("--out", help="output directory (created if missing; not with --serve)")
    ap.add_argument("--serve", action="store_true", help="time frames sent on stdin (see above)")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs per frame after 1 warm-up (default 1)")
    ap.add_argument("--input-name", default=None, help="model input to feed (default: the first)")
    ap.add_argument("--engine", choices=["onnxruntime", "openvino"], default="onnxruntime",
                    help="the engine that runs the model (default onnxruntime)")
    ap.add_argument("--precision", choices=["default", "f32", "bf16"], default="default",
                    help="openvino's inference precision (default: the CPU plugin's choice)")
    args = ap.parse_args()

    if not os.path.isfile(args.model):
        die(f"model file not found: {args.model}")
    if not args.serve and (args.input is None or args.out is None):
        die("--input and --out are required (unless --serve)")
    if not args.serve and not os.path.isfile(args.input):
        die(f"input file not found: {args.input}")
    if args.engine != "openvino" and args.precision != "default":
        die("--precision applies to --engine openvino only")
    if args.threads < 1:
        die("--threads must be >= 1")
    if args.repeat < 1:
        die("--repeat must be >= 1")
    shape = parse_shape(args.shape)
    n = 1
    for d in shape:
        n *= d
    if args.serve:
        serve(args, shape, n)
        return
    size = os.path.getsize(args.input)
    frame_bytes = n * 4
    if size == 0 or size % frame_bytes != 0:
        die(f"input {args.input} has {size} bytes, not a positive multiple of "
            f"{frame_bytes} (= 4 x {'x'.join(map(str, shape))})")
    frames = size // frame_bytes

    np, sess = open_session(args, shape)

    data = np.fromfile(args.input, dtype="<f4").reshape((frames, *shape))
    out_names = sess.out_names
    os.makedirs(args.out, exist_ok=True)

    def run(x):
        try:
            return sess.run(x)
        except Exception as e:  # noqa: BLE001
            die(f"{args.engine} run failed: {e}", 1)

    run(np.ascontiguousarray(data[0]))  # warm-up
    ms_all, ms_per_frame, out_shapes = [], [], None
    for f in range(frames):
        x = np.ascontiguousarray(data[f])
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            outs = run(x)
            times.append((time.perf_counter() - t0) * 1000.0)
        ms_all.extend(times)
        ms_per_frame.append(statistics.median(times))
        if out_shapes is None:
            out_shapes = [list(o.shape) for o in outs]
        for i, o in enumerate(outs):
            name = f"out{i}.f32" if frames == 1 else f"out{i}_{f}.f32"
            np.ascontiguousarray(o, dtype="<f4").tofile(os.path.join(args.out, name))

    meta = {
        "model": os.path.abspath(args.model),
        "input": {"name": sess.input_name, "shape": shape},
        "outputs": [{"name": nm, "shape": sh} for nm, sh in zip(out_names, out_shapes)],
        "ms_median": statistics.median(ms_all),
        "ms_all": ms_all,
        "frames": frames,
        "repeat": args.repeat,
        "threads": args.threads,
        "engine": args.engine,
        "version": sess.version,
        "precision": sess.precision,
    }
    if frames > 1:
        meta["ms_per_frame"] = ms_per_frame
    with open(os.path.join(args.out, "meta.json"), "w") as fh:
        json.dump(meta, fh, indent=1)
    print(f"{frames} frame(s), {len(ms_all)} timed run(s), median {meta['ms_median']:.2f} ms -> {args.out}")


if __name__ == "__main__":
    main()
