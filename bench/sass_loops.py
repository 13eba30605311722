#!/usr/bin/env python3
"""Instruction counts of the CUDA kernels' hot loops, from SASS: the static proxy for "instructions per
element" that docs/kernels.md quotes, for sessions (or changes) that cannot run Nsight Compute.

  sass_loops.py cubin KERNELS.cubin OUT.sass   disassemble (nvdisasm; see below)
  sass_loops.py loops OUT.sass NAME            the loops of every function whose name contains NAME, with
                                               their static length and instruction mix
  sass_loops.py path OUT.sass NAME START STOP [TAKEN...]
                                               the instructions executed from address START to STOP (hex),
                                               falling through every conditional branch except those at the
                                               TAKEN addresses (the path of a pack that takes no rare branch)

Making the cubin: nvcc -O3 -DNDEBUG -arch=sm_90 -std=c++17 -Iinclude -cubin src/kernels/kd_loss_cuda.cu (the
production kernels); for dev/cuda's, add -I. and name dev/cuda/kd_loss_cluster_per_row.cu (or another program).
On a machine with the CUDA toolkit's nvdisasm or cuobjdump (the GPU machines), `cubin` just runs nvdisasm.
Here, CUDA 13 ships neither; Debian's nvidia-cuda-toolkit 11.8 (non-free; fetch it with `apt-get download`
into a scratch folder, it is no dependency of the project) has an nvdisasm that reads sm_90 code but not the
ELF header of CUDA 12+ cubins (ABI version 8, new e_flags layout): with NVDISASM pointing at it, `cubin`
rewrites the header to the old layout for sm_90 before disassembling. The code bytes are untouched.
"""
import collections
import os
import re
import struct
import subprocess
import sys
import tempfile


def disassemble(cubin, out):
    data = bytearray(open(cubin, 'rb').read())
    nvdisasm = os.environ.get('NVDISASM', 'nvdisasm')
    if data[8] == 8:  # CUDA 12+ header; an 11.x nvdisasm wants ABI 7 and the old sm_90 e_flags
        arch = (struct.unpack_from('<I', data, 0x30)[0] >> 8) & 0xff
        if arch != 90:
            sys.exit(f'error: {cubin} is sm_{arch}; the header rewrite knows sm_90 only')
        data[8] = 7
        struct.pack_into('<I', data, 0x30, 0x005a055a)
    with tempfile.NamedTemporaryFile(suffix='.cubin') as f:
        f.write(data)
        f.flush()
        sass = subprocess.run([nvdisasm, '-c', f.name], check=True, capture_output=True, text=True).stdout
    open(out, 'w').write(sass)


def functions(path):
    """{name: (code [(address, text)], labels {label: index into code})}"""
    funcs, cur = {}, None
    for line in open(path):
        m = re.match(r'^(\S+):\s*$', line)
        if m and not m.group(1).startswith('.'):
            cur = funcs.setdefault(m.group(1), ([], {}))
            continue
        if cur is None:
            continue
        m = re.match(r'^(\.L_x_\d+):', line)
        if m:
            cur[1][m.group(1)] = len(cur[0])
            continue
        m = re.match(r'\s+/\*([0-9a-f]{4,})\*/\s+(.*?);', line)
        if m:
            cur[0].append((int(m.group(1), 16), m.group(2).strip()))
    return funcs


def opcode(text):
    return re.sub(r'^@!?U?P\w+\s+', '', text).split()[0].split('.')[0]


def mix(instrs):
    h = collections.Counter(opcode(t) for _, t in instrs)
    return ' '.join(f'{k}:{v}' for k, v in h.most_common())


def branch_target(text):
    m = re.search(r'BRA\s.*`\((\.L_x_\d+)\)', text)
    return m.group(1) if m else None


def list_loops(path, name):
    for fname, (code, labels) in functions(path).items():
        if name not in fname:
            continue
        print(f'{fname}: {len(code)} instructions')
        for i, (addr, text) in enumerate(code):
            target = branch_target(text)
            if target in labels and labels[target] <= i and i - labels[target] < 1000:
                body = code[labels[target]:i + 1]
                print(f'  loop {body[0][0]:#x}-{addr:#x}: {len(body)} static  {mix(body)}')


def count_path(path, name, start, stop, taken):
    matches = [f for f in functions(path).items() if name in f[0]]
    if len(matches) != 1:
        sys.exit(f'error: {len(matches)} functions contain {name!r}; give a longer part of the name')
    code, labels = matches[0][1]
    index = {a: i for i, (a, _) in enumerate(code)}
    i, path_instrs = index[start], []
    while len(path_instrs) < 10000:
        addr, text = code[i]
        if opcode(text) not in ('BSSY', 'BSYNC'):  # convergence bookkeeping, not issued work
            path_instrs.append((addr, text))
        if addr == stop:
            break
        target = branch_target(text)
        i = labels[target] if target and (not text.startswith('@') or addr in taken) else i + 1
    print(f'{len(path_instrs)} instructions  {mix(path_instrs)}')


def main(argv):
    if len(argv) == 4 and argv[1] == 'cubin':
        disassemble(argv[2], argv[3])
    elif len(argv) == 4 and argv[1] == 'loops':
        list_loops(argv[2], argv[3])
    elif len(argv) >= 6 and argv[1] == 'path':
        count_path(argv[2], argv[3], int(argv[4], 16), int(argv[5], 16), {int(a, 16) for a in argv[6:]})
    else:
        sys.exit(__doc__)


if __name__ == '__main__':
    main(sys.argv)
