"""sandbox-testbench: the operator's test bench and offline demo, never part of its image.

The Hub emulator (`hubsim`), the local control plane (`controlplane`: kube-apiserver, etcd,
kube-controller-manager) and dev mode (`dev`: both wired to a running operator). Tests,
benchmarks and `make dev` use it; the `sandbox-operator` wheel does not contain it.
"""
