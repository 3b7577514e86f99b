#!/usr/bin/env python3
"""Registers, shared memory and spills of every kernel in cuda/*.cu, as ptxas reports them, on a
machine without a GPU: NVRTC (the pip wheel in .venv, or LIBNVRTC=path) compiles each file for one
architecture to a cubin with `--ptxas-options=-v`, as the backend's kernels are built (common.cuh
prepended), and the log is summarised one line per kernel.

    python3 scripts/ptxas_info.py [sm_90] [conv.cu ...]

Occupancy follows from the figures: on an H100 (65536 registers and 228 KB of shared memory per
SM, at most 2048 threads), a 256-thread block of R registers fits 65536 // (256 * R') blocks per
SM, R' being R rounded up to a multiple of 8.
"""
import ctypes
import glob
import os
import re
import sys


def nvrtc():
    path = os.environ.get("LIBNVRTC") or next(
        iter(sorted(glob.glob(".venv/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12"))), None)
    if not path:
        sys.exit("no libnvrtc.so.12: run the README's set-up, or set LIBNVRTC")
    return ctypes.CDLL(path)


def compile_log(lib, name, src, arch):
    prog = ctypes.c_void_p()
    if lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), name.encode(), 0, None, None):
        sys.exit(f"{name}: nvrtcCreateProgram failed")
    opts = [f"-arch={arch}".encode(), b"--ptxas-options=-v", b"--std=c++14"]
    rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    buf = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, buf)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    if rc:
        sys.exit(f"{name}: does not compile for {arch}:\n{buf.value.decode()}")
    return buf.value.decode()


def main():
    args = sys.argv[1:]
    arch = next((a for a in args if a.startswith("sm_")), "sm_90")
    files = [a for a in args if a.endswith(".cu")] or sorted(
        os.path.basename(f) for f in glob.glob("cuda/*.cu"))
    lib = nvrtc()
    common = open("cuda/common.cuh").read()
    print(f"{'kernel':<28} {'regs':>5} {'smem B':>7} {'spill st/ld B':>14}  ({arch})")
    for f in files:
        log = compile_log(lib, f, common + "\n" + open(os.path.join("cuda", f)).read(), arch)
        for entry, body in re.findall(r"Compiling entry function '(\w+)'.*?\n(.*?)(?=ptxas info\s+: Compiling|\Z)",
                                      log, re.S):
            regs = re.search(r"Used (\d+) registers", body)
            smem = re.search(r"(\d+) bytes smem", body)
            spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", body)
            print(f"{entry:<28} {regs.group(1) if regs else '?':>5} {smem.group(1) if smem else '0':>7} "
                  f"{(spill.group(1) + '/' + spill.group(2)) if spill else '?':>14}")


if __name__ == "__main__":
    main()
