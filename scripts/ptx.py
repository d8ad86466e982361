#!/usr/bin/env python3
"""Compile kernels/*.cu to PTX with NVRTC; no GPU and no CUDA toolkit needed.

    scripts/ptx.py           regenerate kernels/ptx/<name>.ptx (`make kernels`)
    scripts/ptx.py --check   fail if a kernel does not compile, or if the
                             committed PTX differs from a fresh compile (stale),
                             or if a .ptx has no .cu (`make test`)

NVRTC comes from the PyPI wheel `nvidia-cuda-nvrtc-cu12`, pinned to one exact
version (and its SHA-256) so that the PTX is reproducible: fetched once with
`pip download` into target/nvrtc/ and unpacked there; later runs only load
libnvrtc.so.12 with ctypes (well under a second for our kernels).

Why these settings:
- NVRTC 12.0 emits PTX ISA 8.0, which any driver from R525 (CUDA 12.0) on can
  JIT. A newer NVRTC would emit a newer ISA and refuse older drivers
  (CUDA_ERROR_UNSUPPORTED_PTX_VERSION); nothing here needs a newer one.
- compute_52 (Maxwell, the oldest virtual arch CUDA 12 still accepts for
  sm_5x and the first with NVENC H.265): the driver JIT-compiles that PTX for
  every GPU from Maxwell to Hopper and later.
- -default-device; no fast-math: -fmad=false, -ftz=false, -prec-div=true,
  -prec-sqrt=true (the kernels are integer only; these just pin it down).
"""

import argparse
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ROOT / "kernels"
PTX_DIR = KERNELS / "ptx"

NVRTC_PACKAGE = "nvidia-cuda-nvrtc-cu12"
NVRTC_VERSION = "12.0.140"
NVRTC_WHEELS = {
    # machine: (wheel file name, sha256)
    "x86_64": (
        "nvidia_cuda_nvrtc_cu12-12.0.140-py3-none-manylinux1_x86_64.whl",
        "8e94e991d85c422de4da87bdc7472fdc1364367bd4aace7000b559cd33122071",
    ),
}
PIP_PLATFORM = {"x86_64": "manylinux1_x86_64"}
ARCH = "compute_52"
OPTIONS = [
    f"--gpu-architecture={ARCH}",
    "-default-device",
    "-fmad=false",
    "-ftz=false",
    "-prec-div=true",
    "-prec-sqrt=true",
]
CACHE = ROOT / "target" / "nvrtc" / NVRTC_VERSION


def fail(msg):
    print(f"ptx: {msg}", file=sys.stderr)
    sys.exit(1)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def nvrtc_dir():
    """Directory holding libnvrtc.so.12, fetching the pinned wheel if needed."""
    lib = CACHE / "lib"
    if (lib / "libnvrtc.so.12").is_file():
        return lib
    machine = platform.machine()
    if machine not in NVRTC_WHEELS:
        fail(f"no pinned {NVRTC_PACKAGE} wheel for {machine} (only {', '.join(NVRTC_WHEELS)})")
    name, digest = NVRTC_WHEELS[machine]
    CACHE.mkdir(parents=True, exist_ok=True)
    wheel = CACHE / name
    if not wheel.is_file() or sha256(wheel) != digest:
        print(f"ptx: fetching {NVRTC_PACKAGE}=={NVRTC_VERSION} from PyPI (once, ~23 MB)", file=sys.stderr)
        cmd = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
            "--only-binary=:all:", "--platform", PIP_PLATFORM[machine],
            "--dest", str(CACHE), f"{NVRTC_PACKAGE}=={NVRTC_VERSION}",
        ]
        try:
            subprocess.run(cmd, check=True)
        except (OSError, subprocess.CalledProcessError) as e:
            fail(f"could not download {NVRTC_PACKAGE}=={NVRTC_VERSION} with pip ({e}); "
                 "pip and network access to PyPI are needed once (Debian: python3-pip)")
    if not wheel.is_file():
        fail(f"pip did not produce {wheel.name}")
    got = sha256(wheel)
    if got != digest:
        fail(f"{wheel.name}: sha256 {got}, expected {digest}")
    tmp = Path(tempfile.mkdtemp(dir=CACHE))
    with zipfile.ZipFile(wheel) as z:
        for member in z.namelist():
            if member.startswith("nvidia/cuda_nvrtc/lib/") and ".so" in member:
                (tmp / Path(member).name).write_bytes(z.read(member))
    if lib.exists():
        shutil.rmtree(lib)
    tmp.rename(lib)
    wheel.unlink()
    return lib


class Nvrtc:
    def __init__(self, lib):
        # libnvrtc dlopens its builtins library by soname; loading it first
        # (global) makes that work without LD_LIBRARY_PATH.
        for builtins in sorted(lib.glob("libnvrtc-builtins.so*")):
            ctypes.CDLL(str(builtins), mode=ctypes.RTLD_GLOBAL)
        self.lib = ctypes.CDLL(str(lib / "libnvrtc.so.12"))
        self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p

    def _call(self, name, *args):
        rc = getattr(self.lib, name)(*args)
        if rc != 0:
            raise RuntimeError(f"{name}: {self.lib.nvrtcGetErrorString(rc).decode()}")

    def version(self):
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._call("nvrtcVersion", ctypes.byref(major), ctypes.byref(minor))
        return f"{major.value}.{minor.value}"

    def compile(self, source, name):
        """PTX text, or raises CompileError with NVRTC's log."""
        prog = ctypes.c_void_p()
        self._call("nvrtcCreateProgram", ctypes.byref(prog), source.encode(), name.encode(),
                   0, None, None)
        try:
            opts = (ctypes.c_char_p * len(OPTIONS))(*[o.encode() for o in OPTIONS])
            rc = self.lib.nvrtcCompileProgram(prog, len(OPTIONS), opts)
            size = ctypes.c_size_t()
            self._call("nvrtcGetProgramLogSize", prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            self._call("nvrtcGetProgramLog", prog, log)
            if rc != 0:
                raise CompileError(log.value.decode(errors="replace").strip())
            self._call("nvrtcGetPTXSize", prog, ctypes.byref(size))
            ptx = ctypes.create_string_buffer(size.value)
            self._call("nvrtcGetPTX", prog, ptx)
            return ptx.value.decode()
        finally:
            self._call("nvrtcDestroyProgram", ctypes.byref(prog))


class CompileError(Exception):
    pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="compare with the committed PTX instead of writing it")
    args = ap.parse_args()

    sources = sorted(KERNELS.glob("*.cu"))
    if not sources:
        fail(f"no kernels in {KERNELS}")
    nvrtc = Nvrtc(nvrtc_dir())
    problems = []
    for cu in sources:
        out = PTX_DIR / (cu.stem + ".ptx")
        rel = out.relative_to(ROOT)
        try:
            ptx = nvrtc.compile(cu.read_text(), cu.name)
        except CompileError as e:
            problems.append(f"{cu.relative_to(ROOT)} does not compile (NVRTC {nvrtc.version()}):\n{e}")
            continue
        if args.check:
            if not out.is_file():
                problems.append(f"{rel} is missing: run `make kernels` and commit it")
            elif out.read_text() != ptx:
                problems.append(f"{rel} is stale (differs from a fresh compile of "
                                f"{cu.relative_to(ROOT)}): run `make kernels` and commit it")
        else:
            PTX_DIR.mkdir(exist_ok=True)
            if not out.is_file() or out.read_text() != ptx:
                out.write_text(ptx)
                print(f"ptx: wrote {rel}")
    stems = {cu.stem for cu in sources}
    for ptx in sorted(PTX_DIR.glob("*.ptx")):
        if ptx.stem not in stems:
            problems.append(f"{ptx.relative_to(ROOT)} has no kernels/{ptx.stem}.cu: delete it")
    if problems:
        fail("\n".join(problems))
    verb = "up to date" if args.check else "compiled"
    print(f"ptx: {len(sources)} kernel file(s) {verb} "
          f"(NVRTC {nvrtc.version()}, {NVRTC_PACKAGE}=={NVRTC_VERSION}, {ARCH})")


if __name__ == "__main__":
    main()
