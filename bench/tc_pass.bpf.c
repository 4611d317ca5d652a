// SPDX-License-Identifier: Apache-2.0
/*
 * Baseline for bench/bench_ebpf.py: the cheapest tc program there is.  Its test_run time is
 * the harness overhead (skb setup, program call) that every measured program pays too.
 * Compiled at run time by the benchmark; not part of the package.
 */
#define SEC(name) __attribute__((section(name), used))

char LICENSE[] SEC("license") = "Apache-2.0";

SEC("tc")
int tc_pass(void *skb)
{
	return 0; /* TC_ACT_OK */
}
