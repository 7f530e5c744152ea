"""Everything that touches bcc or the bpf() syscall: compiling and attaching the programs in
bpf/, reading their maps and rings, kernel headers and tracefs. Hands raw data to the engines."""
