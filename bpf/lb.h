/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Service load balancing: Cilium's tc load balancer (bpf/lib/lb.h) in miniature.
 *
 *   cil_lb_service  {frontend address, port, protocol, slot} -> slot 0: backend count, rev-NAT
 *                   index, flags; slot n (1..count): the backend ID of that slot
 *   cil_lb_backend  backend ID -> {address, port}
 *   cil_lb_revnat   rev-NAT index -> {frontend address, port}
 *
 * A packet leaving an endpoint towards a frontend is translated (DNAT) to one backend before
 * conntrack and policy see it: policy judges the backend.  The slot is 1 + FNV-1a(client
 * address, source port) mod count, or of the client address alone with session affinity
 * (ciliumpy._datapath.lb_slot computes the same number).  The conntrack entry of the
 * connection remembers the rev-NAT index, and a reply arriving at the client is given the
 * frontend as its source again (reverse NAT).  A frontend without a backend drops the packet
 * with DROP_NO_SERVICE; a rewrite that fails drops it too (fail closed).
 *
 * Structs are mirrored by ciliumpy/backends/_bpfstructs.py and checked against BTF like
 * those of maps.h.
 */
#ifndef CILIUMPY_LB_H
#define CILIUMPY_LB_H

#include "ciliumpy_bpf.h"
#include "maps.h"

/* Helpers only the load balancer uses (enum bpf_func_id numbers). */
static long (*lb_skb_store_bytes)(void *skb, __u32 offset, const void *from, __u32 len,
				  __u64 flags) = (void *)9;
static long (*lb_l3_csum_replace)(void *skb, __u32 offset, __u64 from, __u64 to,
				  __u64 size) = (void *)10;
static long (*lb_l4_csum_replace)(void *skb, __u32 offset, __u64 from, __u64 to,
				  __u64 flags) = (void *)11;
static __s64 (*lb_csum_diff)(const void *from, __u32 from_size, const void *to, __u32 to_size,
			     __u32 seed) = (void *)28;

#define LB_F_PSEUDO_HDR (1ULL << 4)
#define LB_F_MARK_MANGLED_0 (1ULL << 5)

/* lb_service.flags */
#define LB_SVC_AFFINITY 0x01

struct lb_service_key {
	__u8 address[16];	/* IPv4 in the first 4 bytes */
	__be16 dport;
	__u16 backend_slot;	/* 0 = the service entry itself */
	__u8 proto;
	__u8 scope;		/* always 0 (external scope) */
	__u8 family;		/* enum cil_family */
	__u8 pad;
};

struct lb_service {
	__u32 backend_id;	/* slot > 0: the backend of this slot */
	__u16 count;		/* slot 0: backends new connections may use */
	__u16 rev_nat_index;	/* the frontend's service ID */
	__u8 flags;		/* LB_SVC_AFFINITY */
	__u8 flags2;
	__u16 qcount;		/* quarantined backends: always 0 */
};

struct lb_backend {
	__u8 address[16];
	__be16 port;
	__u8 proto;
	__u8 flags;		/* backend state: always 0 (active) */
	__u16 cluster_id;
	__u8 zone;
	__u8 family;
};

struct lb_revnat {
	__u8 address[16];
	__be16 port;
	__u8 family;
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb_service_key);
	__type(value, struct lb_service);
	__uint(max_entries, 65536);
} cil_lb_service SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb_backend);
	__uint(max_entries, 65536);
} cil_lb_backend SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u16);
	__type(value, struct lb_revnat);
	__uint(max_entries, 65536);
} cil_lb_revnat SEC(".maps");

#define LB_FNV_OFFSET 0x811C9DC5U
#define LB_FNV_PRIME 0x01000193U

static __always_inline __u32 lb_fnv(__u32 h, __u8 byte)
{
	return (h ^ byte) * LB_FNV_PRIME;
}

/* FNV-1a over the client address (4 or 16 bytes) and, without affinity, the source port. */
static __always_inline __u32 lb_hash(const __u8 *saddr, __u8 family, __u16 sport, int affinity)
{
	__u32 h = LB_FNV_OFFSET;
	int i;

#pragma unroll
	for (i = 0; i < 4; i++)
		h = lb_fnv(h, saddr[i]);
	if (family == CIL_FAMILY_IPV6) {
#pragma unroll
		for (i = 4; i < 16; i++)
			h = lb_fnv(h, saddr[i]);
	}
	if (!affinity) {
		h = lb_fnv(h, sport >> 8);
		h = lb_fnv(h, sport & 0xFF);
	}
	return h;
}

/* The L4 checksum field's offset, or 0 when the protocol has none we can update (SCTP's
 * CRC32c covers the ports, which Cilium's LB does not rewrite either). */
static __always_inline __u32 lb_csum_off(const struct packet *p)
{
	if (p->protocol == IPPROTO_TCP)
		return p->l4_off + 16;
	if (p->protocol == IPPROTO_UDP)
		return p->l4_off + 6;
	return 0;
}

/* Rewrite one address (source or destination) and one port of the packet, checksums
 * included; `to_port` is in network order.  Nonzero on failure. */
static __always_inline int lb_rewrite(struct __sk_buff *skb, const struct packet *p, int dst,
				      const __u8 *to_addr, __be16 to_port)
{
	__u32 csum_off = lb_csum_off(p);
	__u32 port_off = p->l4_off + (dst ? 2 : 0);
	__be16 old_port = bpf_htons(dst ? p->dport : p->sport);
	__u64 l4_flags = p->protocol == IPPROTO_UDP ? LB_F_MARK_MANGLED_0 : 0;

	if (p->family == CIL_FAMILY_IPV4) {
		__u32 addr_off = ETH_HLEN + (dst ? 16 : 12);
		__be32 from, to;

		__builtin_memcpy(&from, dst ? p->daddr : p->saddr, 4);
		__builtin_memcpy(&to, to_addr, 4);
		if (lb_l3_csum_replace(skb, ETH_HLEN + 10, from, to, 4) < 0)
			return -1;
		if (csum_off && lb_l4_csum_replace(skb, csum_off, from, to, LB_F_PSEUDO_HDR | l4_flags | 4) < 0)
			return -1;
		if (lb_skb_store_bytes(skb, addr_off, &to, 4, 0) < 0)
			return -1;
	} else {
		__u32 addr_off = ETH_HLEN + (dst ? 24 : 8);
		__u8 from[16], to[16];
		__s64 diff;

		__builtin_memcpy(from, dst ? p->daddr : p->saddr, 16);
		__builtin_memcpy(to, to_addr, 16);
		diff = lb_csum_diff(from, 16, to, 16, 0);
		if (diff < 0)
			return -1;
		if (csum_off && lb_l4_csum_replace(skb, csum_off, 0, diff, LB_F_PSEUDO_HDR | l4_flags) < 0)
			return -1;
		if (lb_skb_store_bytes(skb, addr_off, to, 16, 0) < 0)
			return -1;
	}
	if (csum_off && lb_l4_csum_replace(skb, csum_off, old_port, to_port, l4_flags | 2) < 0)
		return -1;
	if (lb_skb_store_bytes(skb, port_off, &to_port, 2, 0) < 0)
		return -1;
	return 0;
}

static __always_inline int lb_fail(struct decision *d, const struct endpoint_info *ep,
				   const struct packet *p, __u8 reason)
{
	d->flags = CIL_EVENT_ENFORCED;
	d->endpoint_id = ep->endpoint_id;
	d->local_identity = ep->identity;
	d->remote_identity = ipcache_identity(p->daddr, p->family);
	d->verdict = CIL_VERDICT_DROP;
	d->drop_reason = reason;
	return TC_ACT_SHOT;
}

/*
 * The tc load balancer at an endpoint's egress hook: a packet to a frontend continues to a
 * backend.  TC_ACT_OK to go on (translated or not; d->service_id says which), TC_ACT_SHOT
 * when the packet was dropped here (d filled in).
 */
static __always_inline int lb_translate(struct __sk_buff *skb, struct packet *p,
					const struct endpoint_info *ep, struct decision *d)
{
	struct lb_service_key key = {};
	const struct lb_service *svc, *slot;
	const struct lb_backend *be;
	__u16 count;

	if (!ep || p->fragment ||
	    (p->protocol != IPPROTO_TCP && p->protocol != IPPROTO_UDP && p->protocol != IPPROTO_SCTP))
		return TC_ACT_OK;
	__builtin_memcpy(key.address, p->daddr, 16);
	key.dport = bpf_htons(p->dport);
	key.proto = p->protocol;
	key.family = p->family;
	svc = bpf_map_lookup_elem(&cil_lb_service, &key);
	if (likely(!svc))
		return TC_ACT_OK;
	count = svc->count;
	d->service_id = svc->rev_nat_index;
	if (!count)
		return lb_fail(d, ep, p, CIL_DROP_NO_SERVICE);
	key.backend_slot = 1 + lb_hash(p->saddr, p->family, p->sport, svc->flags & LB_SVC_AFFINITY) % count;
	slot = bpf_map_lookup_elem(&cil_lb_service, &key);
	if (!slot)
		return lb_fail(d, ep, p, CIL_DROP_NO_SERVICE);
	be = bpf_map_lookup_elem(&cil_lb_backend, &slot->backend_id);
	if (!be || be->family != p->family)
		return lb_fail(d, ep, p, CIL_DROP_NO_SERVICE);
	if (lb_rewrite(skb, p, 1, be->address, be->port))
		return lb_fail(d, ep, p, CIL_DROP_WRITE_ERROR);
	__builtin_memcpy(p->daddr, be->address, 16);
	p->dport = bpf_ntohs(be->port);
	return TC_ACT_OK;
}

/* Reverse NAT of a reply arriving at the client: its source becomes the frontend again.
 * TC_ACT_OK, or TC_ACT_SHOT (d updated) when the rewrite failed. */
static __always_inline int lb_rev_nat(struct __sk_buff *skb, struct packet *p, struct decision *d)
{
	const struct lb_revnat *rn;
	__u16 index = d->service_id;

	if (!index || d->ct_state != CIL_CT_REPLY)
		return TC_ACT_OK;
	rn = bpf_map_lookup_elem(&cil_lb_revnat, &index);
	if (!rn || rn->family != p->family) {
		d->service_id = 0;	/* the service is gone: the reply passes unchanged */
		return TC_ACT_OK;
	}
	if (lb_rewrite(skb, p, 0, rn->address, rn->port)) {
		d->verdict = CIL_VERDICT_DROP;
		d->drop_reason = CIL_DROP_WRITE_ERROR;
		return TC_ACT_SHOT;
	}
	__builtin_memcpy(p->saddr, rn->address, 16);
	p->sport = bpf_ntohs(rn->port);
	return TC_ACT_OK;
}

#endif /* CILIUMPY_LB_H */
