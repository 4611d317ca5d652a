/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Self-contained replacement for <linux/bpf.h> + <bpf/bpf_helpers.h> + packet headers.
 *
 * Why: clang -target bpf cannot find <asm/types.h> without the multiarch include dir, and
 * libbpf-dev is not installed on the machines we build on.  Everything here is stable UAPI
 * (integer types, the __sk_buff prefix, helper numbers, map type numbers, wire formats), so
 * copying the numbers is safe and keeps the build reproducible with any BPF-capable clang.
 */
#ifndef CILIUMPY_BPF_H
#define CILIUMPY_BPF_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;

#define NULL ((void *)0)

/* --- section / map definition macros (libbpf's BTF-defined map convention) --- */
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __array(name, val) typeof(val) *name[]
/* Branch hints: clang lays the unlikely side out of line, keeping the common path dense. */
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

/* --- map types and flags (enum bpf_map_type / BPF_F_*) --- */
#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_PERCPU_ARRAY 6
#define BPF_MAP_TYPE_LRU_HASH 9
#define BPF_MAP_TYPE_LRU_PERCPU_HASH 10
#define BPF_MAP_TYPE_LPM_TRIE 11
#define BPF_MAP_TYPE_HASH_OF_MAPS 13
#define BPF_MAP_TYPE_RINGBUF 27

#define BPF_F_NO_PREALLOC (1U << 0)
#define BPF_F_NO_COMMON_LRU (1U << 1)
#define BPF_F_RDONLY_PROG (1U << 7)

#define BPF_ANY 0
#define BPF_NOEXIST 1

/* --- tc return codes --- */
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define TC_ACT_REDIRECT 7

/* --- helpers, by their stable numbers in enum bpf_func_id --- */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value,
				   __u64 flags) = (void *)2;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static long (*bpf_skb_load_bytes)(const void *skb, __u32 offset, void *to,
				  __u32 len) = (void *)26;
static void *(*bpf_ringbuf_reserve)(void *ringbuf, __u64 size, __u64 flags) = (void *)131;
/* Hand the packet to the peer of a veth (the device's other end, in its own namespace) as
 * if it had arrived there: from tc ingress only, since Linux 5.10. */
static long (*bpf_redirect_peer)(__u32 ifindex, __u64 flags) = (void *)155;
static void (*bpf_ringbuf_submit)(void *data, __u64 flags) = (void *)132;

/* --- the UAPI struct __sk_buff, up to the fields this program may touch --- */
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
	__u32 vlan_present;
	__u32 vlan_tci;
	__u32 vlan_proto;
	__u32 priority;
	__u32 ingress_ifindex;
	__u32 ifindex;
	__u32 tc_index;
	__u32 cb[5];
	__u32 hash;
	__u32 tc_classid;
	__u32 data;
	__u32 data_end;
};

/* --- byte order (the BPF target here is little-endian: bpfel) --- */
#define bpf_htons(x) ((__be16)__builtin_bswap16(x))
#define bpf_ntohs(x) ((__u16)__builtin_bswap16(x))

/* --- wire formats --- */
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

#define IPPROTO_HOPOPTS 0
#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_ROUTING 43
#define IPPROTO_FRAGMENT 44
#define IPPROTO_AH 51
#define IPPROTO_ICMPV6 58
#define IPPROTO_DSTOPTS 60
#define IPPROTO_SCTP 132

struct ethhdr {
	__u8 h_dest[6];
	__u8 h_source[6];
	__be16 h_proto;
};

struct iphdr {
	__u8 ihl_version; /* low nibble IHL, high nibble version (bitfields avoided on purpose) */
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__be16 check;
	__u8 saddr[4];
	__u8 daddr[4];
} __attribute__((aligned(4)));	/* one 4-byte load per address, read in place from the packet */

#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF

struct ipv6hdr {
	__u8 vtc_flow[4];
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
} __attribute__((aligned(8)));	/* addresses at offsets 8 and 24: 8-byte loads, not 2-byte ones */

/* First two bytes of hop-by-hop, routing, destination-options and AH headers. */
struct ipv6_opt_hdr {
	__u8 nexthdr;
	__u8 hdrlen;
};

struct frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset in 8-byte units << 3 | MF */
	__be32 identification;
};

#define IP6_OFFSET 0xFFF8

/* Enough of TCP/UDP/SCTP for policy: all three start with source and destination port. */
struct l4ports {
	__be16 sport;
	__be16 dport;
};

/* The TCP header up to its flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10,
 * URG 0x20, ECE 0x40, CWR 0x80). */
struct tcp_prefix {
	__be16 sport;
	__be16 dport;
	__be32 seq;
	__be32 ack_seq;
	__u8 doff_res;
	__u8 flags;
};

/* ICMP and ICMPv6 share this 8-byte prefix; `id` is the echo identifier. */
struct icmp_prefix {
	__u8 type;
	__u8 code;
	__be16 checksum;
	__be16 id;
	__be16 sequence;
};

#endif /* CILIUMPY_BPF_H */
