/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Every map key/value layout and every number shared with Python, defined exactly once.
 *
 * ciliumpy/backends/_bpfstructs.py mirrors these structs with ctypes; tests/backends compare
 * the mirrors with this object's BTF (sizes and member offsets) and the enums below with the
 * Python IntEnums, so a change here that is not made there fails the tests.
 * All structs are naturally aligned with explicit padding: no compiler-inserted holes.
 * Fields named be* or documented "network order" hold big-endian values; all others are
 * host order.
 */
#ifndef CILIUMPY_MAPS_H
#define CILIUMPY_MAPS_H

#include "ciliumpy_bpf.h"

/* ---- numbers mirrored by Python IntEnums ---- */

/* ciliumpy._datapath.DropReason (Cilium's bpf/lib/drop_reasons.h, positive form). */
enum cil_drop_reason {
	CIL_DROP_NONE = 0,
	CIL_DROP_POLICY = 133,
	CIL_DROP_INVALID = 134,
	CIL_DROP_WRITE_ERROR = 141,
	CIL_DROP_CT_UNKNOWN_PROTO = 137,
	CIL_DROP_FRAG_NOSUPPORT = 157,
	CIL_DROP_NO_SERVICE = 158,
	CIL_DROP_PROXY_LOOKUP_FAILED = 178,	/* no proxy socket for a redirect (bpf/proxy.h) */
	CIL_DROP_PROXY_SET_FAILED = 179,	/* bpf_sk_assign() refused the proxy socket */
	CIL_DROP_PROXY_UNKNOWN_PROTO = 180,	/* a redirect of neither TCP nor UDP */
	CIL_DROP_POLICY_DENY = 181,
	CIL_DROP_POLICY_AUTH_REQUIRED = 189,
};

/* ciliumpy._datapath.Action */
enum cil_verdict {
	CIL_VERDICT_ALLOW = 0,
	CIL_VERDICT_DROP = 1,
	CIL_VERDICT_REDIRECT = 2,
};

/* ciliumpy._datapath.CTState */
enum cil_ct_state {
	CIL_CT_NEW = 0,
	CIL_CT_ESTABLISHED = 1,
	CIL_CT_REPLY = 2,
	CIL_CT_RELATED = 3,
};

/* ciliumpy._datapath.MatchType (Hubble policy_match_type) */
enum cil_match_type {
	CIL_MATCH_NONE = 0,
	CIL_MATCH_L3_ONLY = 1,
	CIL_MATCH_L3_L4 = 2,
	CIL_MATCH_L4_ONLY = 3,
	CIL_MATCH_ALL = 4,
	CIL_MATCH_L3_PROTO = 5,
	CIL_MATCH_PROTO_ONLY = 6,
};

/* ciliumpy._datapath.Direction: also the value of policy_key.egress. */
enum cil_direction {
	CIL_DIR_INGRESS = 0,
	CIL_DIR_EGRESS = 1,
};

/* ciliumpy.backends._bpfstructs.EventMode */
enum cil_event_mode {
	CIL_EVENTS_ALL = 0,
	CIL_EVENTS_DROPS = 1,
	CIL_EVENTS_NONE = 2,
};

/* ciliumpy.backends._bpfstructs.AddressFamily (Cilium's ipcache family numbers). */
enum cil_family {
	CIL_FAMILY_IPV4 = 1,
	CIL_FAMILY_IPV6 = 2,
};

/* ciliumpy.backends._bpfstructs.EventFlags */
enum cil_event_flags {
	CIL_EVENT_ENFORCED = 1 << 0,	/* a local endpoint owns the hook's address */
	CIL_EVENT_FRAGMENT = 1 << 1,	/* non-first fragment: no L4 header, ports 0 */
	CIL_EVENT_HAS_ENTRY = 1 << 2,	/* a policy entry was chosen (key_* are valid) */
};

#define CIL_ID_WORLD 2
#define CIL_PRECEDENCE_MAX 0xFFFFFFFFU
#define CIL_POLICY_FULL_PREFIX 64	/* sec_label(32) + egress(8) + protocol(8) + dport(16) */
#define CIL_POLICY_STATIC_PREFIX 40	/* sec_label + egress are always matched exactly */
#define CIL_IPCACHE_STATIC_PREFIX 32	/* cluster_id + pad + family */

#define CIL_POLICY_ENTRY_DENY 0x01
#define CIL_POLICY_ENTRY_LPM_SHIFT 3
#define CIL_AUTH_TYPE_MASK 0x7F
#define CIL_AUTH_EXPLICIT 0x80

/* ---- endpoints ("lxc" map): local address -> endpoint ---- */
struct endpoint_key {
	__u8 addr[16];		/* network order; IPv4 in the first 4 bytes, rest zero */
	__u8 family;		/* enum cil_family */
	__u8 pad[3];
};

struct endpoint_info {
	__u32 identity;		/* the endpoint's own security identity */
	__u16 endpoint_id;
	__u16 pad;
	/* Local delivery (Cilium's BPF host routing): the node-side device of the endpoint's
	 * veth, 0 when packets to it go through the node's IP stack instead. */
	__u32 ifindex;
	__u8 mac[6];		/* the endpoint's own MAC: destination of delivered frames */
	__u8 node_mac[6];	/* the node side's MAC: their source, as a router would set it */
};

/* ---- ipcache: LPM prefix -> security identity (miss = world) ---- */
struct ipcache_key {
	__u32 prefixlen;	/* CIL_IPCACHE_STATIC_PREFIX + IP prefix length */
	__u16 cluster_id;	/* always 0: one cluster */
	__u8 pad;
	__u8 family;		/* enum cil_family */
	__u8 addr[16];		/* network order; IPv4 in the first 4 bytes */
};

struct ipcache_entry {
	__u32 sec_identity;
};

/* ---- per-endpoint policy (inner LPM tries of cil_policy), Cilium 1.19 layout ---- */
struct policy_key {
	__u32 prefixlen;	/* 40 + (protocol ? 8 + port prefix : 0); lookups use 64 */
	__u32 sec_label;	/* remote identity; 0 = any identity (L4-only entry) */
	__u8 egress;		/* enum cil_direction */
	__u8 protocol;		/* 0 = any */
	__be16 dport;		/* network order, masked; ICMP type for ICMP/ICMPv6 */
};

struct policy_entry {
	__be16 proxy_port;	/* network order; 0 = no redirect */
	__u8 flags;		/* bit0 deny, bits3-7 lpm_prefix_length (proto + port bits) */
	__u8 auth;		/* bits0-6 auth type, bit7 explicit */
	__u32 precedence;	/* higher wins; 0xFFFFFFFF = deny */
	__u32 cookie;		/* opaque tag copied into flow events */
};

/* ---- connection tracking (LRU), one tuple per endpoint and packet direction ---- */
struct ct_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;		/* ICMP: echo identifier */
	__be16 dport;		/* ICMP: 0 */
	__u16 endpoint_id;
	__u8 protocol;
	__u8 family;
};

struct ct_entry {
	__u64 created_ns;
	__u8 direction;		/* hook that created the entry (enum cil_direction) */
	__u8 flags;		/* CIL_CT_F_* (bpf/proxy.h) */
	__u16 rev_nat_index;	/* service of a translated connection (bpf/lb.h), 0 = none */
	__u8 pad[4];
};

/* ---- authentication: (endpoint, remote identity, auth type) pairs ---- */
struct auth_key {
	__u32 local_id;		/* the local endpoint's security identity (Cilium's local_sec_label) */
	__u32 remote_id;	/* remote security identity */
	__u16 remote_node_id;	/* always 0 (local node) */
	__u8 auth_type;
	__u8 pad;
};

struct auth_info {
	__u64 expiration;	/* bpf_ktime_get_ns() deadline; 0 = never expires */
};

/* ---- policy accounting, keyed like Cilium's cilium_policystats ---- */
struct policy_stats_key {
	__u16 endpoint_id;
	__u8 pad;
	__u8 prefix_len;	/* lpm prefix length of the chosen entry (0..24) */
	__u32 sec_label;	/* identity of the chosen entry (remote identity or 0) */
	__u8 egress;
	__u8 protocol;		/* 0 when the entry matches every protocol */
	__be16 dport;		/* network order, masked to the entry's port prefix */
};

struct policy_stats_value {
	__u64 packets;
	__u64 bytes;
};

/* ---- runtime configuration (ARRAY, one element) ---- */
struct cil_config {
	__u32 event_mode;	/* enum cil_event_mode */
	/* Cilium's enable-extended-ip-protocols: IP protocols conntrack does not know are
	 * judged by policy (port 0) instead of dropped with CIL_DROP_CT_UNKNOWN_PROTO. */
	__u32 extended_ip_protocols;
	/* Proxies listen in this (the node's) namespace: redirects go to their sockets
	 * (bpf/proxy.h) instead of passing at L3/L4. */
	__u32 proxy_redirect;
};

/* ---- ring-buffer record: one per evaluated IP packet (subject to event_mode) ---- */
struct flow_event {
	__u64 ts_ns;
	__u32 local_identity;
	__u32 remote_identity;
	__u32 key_identity;	/* sec_label of the chosen entry */
	__u32 cookie;
	__u32 pkt_len;
	__u16 endpoint_id;	/* 0 = no local endpoint owns the hook's address */
	__u16 proxy_port;	/* host order */
	__u16 sport;		/* host order; ICMP: echo identifier */
	__u16 dport;		/* host order; the policy port: ICMP type, 0 for fragments */
	__u16 key_dport;	/* host order, masked to the chosen entry's port prefix */
	__u8 verdict;		/* enum cil_verdict */
	__u8 drop_reason;	/* enum cil_drop_reason */
	__u8 direction;		/* enum cil_direction */
	__u8 protocol;
	__u8 key_protocol;	/* 0 when the chosen entry matches every protocol */
	__u8 match_type;	/* enum cil_match_type */
	__u8 lpm_prefix;	/* lpm prefix length of the chosen entry (0..24) */
	__u8 ct_state;		/* enum cil_ct_state */
	__u8 auth_type;
	__u8 flags;		/* enum cil_event_flags */
	__u8 family;		/* enum cil_family; 0 when the L3 header was unusable */
	__u8 tcp_flags;		/* the TCP header's flags byte; 0 for other protocols */
	__u8 pad[6];
	__u8 saddr[16];
	__u8 daddr[16];
};

#endif /* CILIUMPY_MAPS_H */
