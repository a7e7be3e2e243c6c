#!/bin/sh
# Run the PyTorch reference trainer with the settings that make it fastest on
# this CPU (see the docstring of train_pytorch.py for why each is set).
export OMP_PROC_BIND=true
# ATen's AVX-512 kernels where the CPU has them (forcing them elsewhere is an illegal instruction)
if grep -qw avx512bw /proc/cpuinfo; then export ATEN_CPU_CAPABILITY=avx512; else export ATEN_CPU_CAPABILITY=avx2; fi
export GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184
exec /usr/bin/python3 "$(dirname "$0")/train_pytorch.py" "$@"
