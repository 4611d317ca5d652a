// SPDX-License-Identifier: Apache-2.0
/*
 * ciliumpy's tc datapath: Cilium's per-endpoint policy enforcement in miniature.
 *
 *   cil_from_container  egress hook: the endpoint owning the SOURCE address, remote = dst
 *   cil_to_container    ingress hook: the endpoint owning the DESTINATION, remote = src
 *
 * Per packet: parse (Ethernet, IPv4/IPv6 + extension headers, L4 ports or ICMP type) ->
 * endpoint lookup (cil_lxc) -> remote identity (cil_ipcache, miss = world) -> conntrack
 * (cil_ct) -> IPv4 frag-needed bypass -> two policy lookups in the endpoint's LPM trie
 * (exact identity, then identity 0) and Cilium 1.17+'s choice between them -> auth check
 * (cil_auth) -> accounting (cil_policystats) -> CT entry for allowed new flows -> flow event
 * (cil_events).  ciliumpy/backends/_simulator.py is the reference semantics, step by step.
 *
 * Between two endpoints of the node whose devices are known, cil_from_container also runs
 * the destination's ingress decision and delivers the packet into its namespace (Cilium's
 * local delivery with BPF host routing, see deliver()); otherwise each hook judges its own
 * side.  Either way every packet crosses two decisions, so the common
 * path is kept short (docs/ebpf-bench.md): headers are read in place, not copied out with
 * helpers; the clock is read only for an event, a new CT entry or an expiring auth pair; the
 * flow event is built only when the event mode emits it; an established flow costs one
 * conntrack lookup.
 */
#include "ciliumpy_bpf.h"
#include "maps.h"

char LICENSE[] SEC("license") = "Apache-2.0";

#define ETH_HLEN 14
/* How many IPv6 extension headers we walk before giving up (fail closed: drop 134). */
#define CIL_IPV6_MAX_EXT 8

/* ---------------------------------------------------------------- maps */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_info);
	__uint(max_entries, 4096);
} cil_lxc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_entry);
	__uint(max_entries, 512000);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} cil_ipcache SEC(".maps");

/*
 * Template of the per-endpoint policy tries.  Userspace creates one trie per endpoint with
 * exactly these flags and swaps it into cil_policy in a single update, so a policy change is
 * atomic for the datapath.  Inner maps must match this template exactly, max_entries
 * included: LPM tries reject BPF_F_INNER_MAP (measured on 6.18), so every endpoint's trie has
 * the same capacity, like Cilium's bpf-policy-map-max.  BPF_F_RDONLY_PROG because, as in
 * Cilium 1.19, only the agent writes policy.
 */
struct cil_policy_inner {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct policy_key);
	__type(value, struct policy_entry);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_RDONLY_PROG);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__type(key, __u32);	/* endpoint id */
	__uint(max_entries, 4096);
	__array(values, struct cil_policy_inner);
} cil_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
	__uint(max_entries, 65536);
} cil_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct auth_key);
	__type(value, struct auth_info);
	__uint(max_entries, 16384);
} cil_auth SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__type(key, struct policy_stats_key);
	__type(value, struct policy_stats_value);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
} cil_policystats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct cil_config);
	__uint(max_entries, 1);
} cil_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} cil_events SEC(".maps");

/*
 * BTF anchor: clang emits BTF only for types reachable from globals, and reaches a struct
 * behind a pointer (the inner map's key) only as a forward declaration.  This never-loaded
 * variable pulls the complete definition of every shared struct and enum into .BTF, which
 * libbpf needs for the inner policy map and tests/backends need to check the Python mirrors.
 * libbpf skips the unknown ".cil_btf" section when it creates maps.
 */
struct cil_btf_anchor {
	struct endpoint_key endpoint_key;
	struct endpoint_info endpoint_info;
	struct ipcache_key ipcache_key;
	struct ipcache_entry ipcache_entry;
	struct policy_key policy_key;
	struct policy_entry policy_entry;
	struct ct_key ct_key;
	struct ct_entry ct_entry;
	struct auth_key auth_key;
	struct auth_info auth_info;
	struct policy_stats_key policy_stats_key;
	struct policy_stats_value policy_stats_value;
	struct cil_config cil_config;
	struct flow_event flow_event;
	enum cil_drop_reason drop_reason;
	enum cil_verdict verdict;
	enum cil_ct_state ct_state;
	enum cil_match_type match_type;
	enum cil_direction direction;
	enum cil_event_mode event_mode;
	enum cil_family family;
	enum cil_event_flags event_flags;
};
struct cil_btf_anchor cil_btf_anchor SEC(".cil_btf");

/* ---------------------------------------------------------------- parsing */

struct packet {
	__u8 saddr[16] __attribute__((aligned(8)));	/* 8-byte copies into map keys */
	__u8 daddr[16];
	__u16 sport;		/* host order; ICMP: echo identifier */
	__u16 dport;		/* host order; the policy port (ICMP type, 0 for fragments) */
	__u8 family;		/* 0 until the L3 header was read completely */
	__u8 protocol;
	__u8 fragment;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 ttl;		/* IPv4 TTL / IPv6 hop limit, for local delivery */
	__u8 unknown_l4;	/* conntrack would drop it (CIL_DROP_CT_UNKNOWN_PROTO) */
	__u8 tcp_flags;		/* TCP only: the header's flags byte, for the flow event */
	__u16 l4_off;		/* frame offset of the L4 header (service NAT rewrites there) */
};

enum parse_result {
	PARSE_OK,
	PARSE_NOT_IP,
	PARSE_INVALID,
	PARSE_RETRY,	/* direct pass only: a header is not (all) in the linear area */
};

/* ICMP of the packet's own family: ICMP in IPv4, ICMPv6 in IPv6.  Only these have their
 * type as policy port and the echo identifier in conntrack; the other family's protocol
 * number is just an IP protocol without ports (Cilium's ct_lookup4/ct_lookup6). */
static __always_inline int is_icmp(__u8 family, __u8 protocol)
{
	return family == CIL_FAMILY_IPV4 ? protocol == IPPROTO_ICMP : protocol == IPPROTO_ICMPV6;
}

/* The protocols Cilium's conntrack tracks (SCTP as with enable-sctp). */
static __always_inline int is_known_l4(const struct packet *p)
{
	return p->protocol == IPPROTO_TCP || p->protocol == IPPROTO_UDP ||
	       p->protocol == IPPROTO_SCTP || is_icmp(p->family, p->protocol);
}

/*
 * Headers are read in two passes.  The first uses direct packet access: a bounds check
 * against data_end and a load, where bpf_skb_load_bytes costs a helper call and a memcpy per
 * header (about a sixth of the whole program's time when every header went through it).
 * Should a header not be (all) in the skb's linear area -- paged data, which a live skb may
 * have and BPF_PROG_TEST_RUN never builds, or a packet that is simply too short -- the packet
 * is parsed again from the start with bpf_skb_load_bytes, which reaches paged data too; so a
 * packet is judged by its bytes, not by how the kernel laid them out, and a truncated one
 * gets the helper pass's verdict.  Two separate passes, not a fallback per header: a choice
 * per header doubles the verifier's paths at every header (10x the verification work,
 * 1.3 s to load the object); a second pass is verified once.  -DCIL_PARSE_WITH_HELPERS
 * skips the direct pass, for the tests.
 *
 * skb->data and skb->data_end are read once, in parse_packet(): clang otherwise keeps
 * &skb->data in a register for later reads, and the verifier rejects a load through a
 * modified context pointer.
 */
struct frame {
	struct __sk_buff *skb;
	void *data;
	void *data_end;
	int direct;		/* a compile-time constant in each inlined copy of the parser */
};

/* `len` bytes at `off`: in the packet itself (direct pass) or copied into `buf` (helper
 * pass); NULL when they are not there. */
static __always_inline const void *header(const struct frame *f, __u32 off, __u32 len, void *buf)
{
	if (f->direct) {
		void *hdr = f->data + off;

		/* One pointer for the check and the access: the verifier ties the range to it. */
		return likely(hdr + len <= f->data_end) ? hdr : NULL;
	}
	if (bpf_skb_load_bytes(f->skb, off, buf, len) < 0)
		return NULL;
	return buf;
}

/* The last byte of a header of `len` bytes at `off` must exist (truncation -> drop 134). */
static __always_inline int have_bytes(const struct frame *f, __u32 off, __u32 len)
{
	__u8 last;

	if (f->direct)
		return likely(f->data + off + len <= f->data_end);
	return bpf_skb_load_bytes(f->skb, off + len - 1, &last, 1) == 0;
}

/* What a missing header means: in the direct pass, only that the helper pass must decide. */
static __always_inline int missing(const struct frame *f, int result)
{
	return f->direct ? PARSE_RETRY : result;
}

static __always_inline int parse_l4(const struct frame *f, __u32 off, struct packet *p)
{
	union {
		struct l4ports ports;
		struct icmp_prefix icmp;
		struct tcp_prefix tcp;
	} buf;
	const struct l4ports *ports;
	const struct icmp_prefix *icmp;
	const struct tcp_prefix *tcp;
	__u32 hlen;

	p->l4_off = off;
	/* Non-first fragments carry no L4 header: ports stay 0 (Cilium without frag tracking). */
	if (p->fragment)
		return PARSE_OK;

	switch (p->protocol) {
	case IPPROTO_TCP:
		hlen = 20;
		break;
	case IPPROTO_UDP:
		hlen = 8;
		break;
	case IPPROTO_SCTP:
		hlen = 12;
		break;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		if (!is_icmp(p->family, p->protocol))
			return PARSE_OK;	/* the other family's ICMP: no ports */
		icmp = header(f, off, sizeof(*icmp), &buf.icmp);
		if (!icmp)
			return missing(f, PARSE_INVALID);
		p->icmp_type = icmp->type;
		p->icmp_code = icmp->code;
		p->sport = bpf_ntohs(icmp->id);
		p->dport = icmp->type;
		return PARSE_OK;
	default:
		/* Protocols without ports can only match port-wildcard entries. */
		return PARSE_OK;
	}
	if (!have_bytes(f, off, hlen))
		return missing(f, PARSE_INVALID);
	if (p->protocol == IPPROTO_TCP) {
		tcp = header(f, off, sizeof(*tcp), &buf.tcp);
		if (!tcp)
			return missing(f, PARSE_INVALID);
		p->sport = bpf_ntohs(tcp->sport);
		p->dport = bpf_ntohs(tcp->dport);
		p->tcp_flags = tcp->flags;
		return PARSE_OK;
	}
	ports = header(f, off, sizeof(*ports), &buf.ports);
	if (!ports)
		return missing(f, PARSE_INVALID);
	p->sport = bpf_ntohs(ports->sport);
	p->dport = bpf_ntohs(ports->dport);
	return PARSE_OK;
}

static __always_inline int parse_ipv4(const struct frame *f, struct packet *p)
{
	struct iphdr buf;
	const struct iphdr *ip;
	__u32 ihl;

	ip = header(f, ETH_HLEN, sizeof(*ip), &buf);
	if (!ip)
		return missing(f, PARSE_INVALID);
	if ((ip->ihl_version >> 4) != 4)
		return PARSE_INVALID;
	ihl = (__u32)(ip->ihl_version & 0x0F) * 4;
	if (ihl < sizeof(*ip))
		return PARSE_INVALID;
	if (!have_bytes(f, ETH_HLEN, ihl))
		return missing(f, PARSE_INVALID);
	__builtin_memcpy(p->saddr, ip->saddr, 4);
	__builtin_memcpy(p->daddr, ip->daddr, 4);
	p->family = CIL_FAMILY_IPV4;
	p->protocol = ip->protocol;
	p->ttl = ip->ttl;
	if (bpf_ntohs(ip->frag_off) & IP_OFFSET)
		p->fragment = 1;
	return parse_l4(f, ETH_HLEN + ihl, p);
}

static __always_inline int ipv6_is_ext(__u8 nexthdr)
{
	return nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
	       nexthdr == IPPROTO_FRAGMENT || nexthdr == IPPROTO_DSTOPTS ||
	       nexthdr == IPPROTO_AH;
}

static __always_inline int parse_ipv6(const struct frame *f, struct packet *p)
{
	union {
		struct ipv6hdr ip6;
		struct ipv6_opt_hdr opt;
		struct frag_hdr frag;
	} buf;
	const struct ipv6hdr *ip6;
	const struct ipv6_opt_hdr *opt;
	const struct frag_hdr *frag;
	__u32 off = ETH_HLEN + sizeof(*ip6);
	__u8 nexthdr;
	int i;

	ip6 = header(f, ETH_HLEN, sizeof(*ip6), &buf.ip6);
	if (!ip6)
		return missing(f, PARSE_INVALID);
	if ((ip6->vtc_flow[0] >> 4) != 6)
		return PARSE_INVALID;
	__builtin_memcpy(p->saddr, ip6->saddr, 16);
	__builtin_memcpy(p->daddr, ip6->daddr, 16);
	p->family = CIL_FAMILY_IPV6;
	p->ttl = ip6->hop_limit;
	nexthdr = ip6->nexthdr;
	/* Extension headers (rare) are walked by the helper pass only: walked with packet
	 * pointers, every chain shape was a separate path for the verifier (150k instructions,
	 * half a second to load), while loads into one buffer let it merge them. */
	if (f->direct && ipv6_is_ext(nexthdr))
		return PARSE_RETRY;

#pragma unroll
	for (i = 0; i < CIL_IPV6_MAX_EXT; i++) {
		if (!ipv6_is_ext(nexthdr))
			break;
		if (nexthdr == IPPROTO_FRAGMENT) {
			frag = header(f, off, sizeof(*frag), &buf.frag);
			if (!frag)
				return missing(f, PARSE_INVALID);
			nexthdr = frag->nexthdr;
			off += sizeof(*frag);
			if (bpf_ntohs(frag->frag_off) & IP6_OFFSET) {
				p->fragment = 1;
				break;
			}
			continue;
		}
		opt = header(f, off, sizeof(*opt), &buf.opt);
		if (!opt)
			return missing(f, PARSE_INVALID);
		/* AH counts 4-byte units minus 2, the others 8-byte units minus 1 (RFC 4302/8200). */
		if (nexthdr == IPPROTO_AH)
			off += ((__u32)opt->hdrlen + 2) * 4;
		else
			off += ((__u32)opt->hdrlen + 1) * 8;
		nexthdr = opt->nexthdr;
	}
	/* A chain longer than we walk is not guessed at: fail closed. */
	if (!p->fragment && ipv6_is_ext(nexthdr))
		return PARSE_INVALID;
	p->protocol = nexthdr;
	return parse_l4(f, off, p);
}

static __always_inline int parse_frame(const struct frame *f, struct packet *p)
{
	struct ethhdr buf;
	const struct ethhdr *eth = header(f, 0, sizeof(*eth), &buf);

	if (!eth)
		return missing(f, PARSE_NOT_IP);
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return parse_ipv4(f, p);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return parse_ipv6(f, p);
	/* ARP and other non-IP traffic is not subject to policy (as in Cilium). */
	return PARSE_NOT_IP;
}

static __always_inline int parse_packet(struct __sk_buff *skb, struct packet *p)
{
	struct frame copied = { .skb = skb, .direct = 0 };
#ifndef CIL_PARSE_WITH_HELPERS
	struct frame direct = {
		.skb = skb,
		.data = (void *)(long)skb->data,
		.data_end = (void *)(long)skb->data_end,
		.direct = 1,
	};
	int ret = parse_frame(&direct, p);

	if (likely(ret != PARSE_RETRY))
		return ret;
	__builtin_memset(p, 0, sizeof(*p));	/* the helper pass starts from nothing */
#endif
	return parse_frame(&copied, p);
}

/* ---------------------------------------------------------------- lookups */

/*
 * What decide() found out about a packet.  The flow event is assembled from this and the
 * packet only when one is emitted: with events off (or drops only), an allowed packet never
 * pays for building, zeroing and copying the 88-byte record, nor for its timestamp.
 */
struct decision {
	__u32 local_identity;
	__u32 remote_identity;
	__u32 cookie;
	__u16 endpoint_id;	/* 0 = no local endpoint owns the hook's address */
	__u16 proxy_port;	/* host order */
	__u16 key_dport;	/* host order, masked to the chosen entry's port prefix */
	__u8 verdict;
	__u8 drop_reason;
	__u8 ct_state;
	__u8 auth_type;
	__u8 lpm_prefix;
	__u8 l3;		/* the chosen entry is the exact-identity lookup's */
	__u8 flags;		/* CIL_EVENT_ENFORCED, CIL_EVENT_HAS_ENTRY */
	__u8 ct_flags;		/* the reply's conntrack entry's flags (CIL_CT_F_*) */
	__u16 service_id;	/* rev-NAT index of a translated packet or of a reply's connection */
};

static __always_inline __u32 ipcache_identity(const __u8 *addr, __u8 family)
{
	struct ipcache_key key = {};
	struct ipcache_entry *hit;

	key.family = family;
	key.prefixlen = CIL_IPCACHE_STATIC_PREFIX + (family == CIL_FAMILY_IPV4 ? 32 : 128);
	__builtin_memcpy(key.addr, addr, 16);
	hit = bpf_map_lookup_elem(&cil_ipcache, &key);
	return hit ? hit->sec_identity : CIL_ID_WORLD;
}

static __always_inline __u8 entry_lpm(const struct policy_entry *e)
{
	return e->flags >> CIL_POLICY_ENTRY_LPM_SHIFT;
}

/* Hubble's policy_match_type from who matched and how many proto/port bits (§4.3 step 8). */
static __always_inline __u8 match_type(int l3, __u8 lpm)
{
	if (l3) {
		if (lpm > 8)
			return CIL_MATCH_L3_L4;
		return lpm ? CIL_MATCH_L3_PROTO : CIL_MATCH_L3_ONLY;
	}
	if (lpm == 0)
		return CIL_MATCH_ALL;
	return lpm <= 8 ? CIL_MATCH_PROTO_ONLY : CIL_MATCH_L4_ONLY;
}

static __always_inline void ct_fill(struct ct_key *k, const struct packet *p, __u16 ep,
				    int reverse)
{
	int icmp = is_icmp(p->family, p->protocol);
	__u16 sport = p->sport, dport = icmp ? 0 : p->dport;

	if (reverse) {
		__builtin_memcpy(k->saddr, p->daddr, 16);
		__builtin_memcpy(k->daddr, p->saddr, 16);
		/* ICMP keeps the identifier in place: a reply carries the request's id. */
		if (!icmp) {
			sport = p->dport;
			dport = p->sport;
		}
	} else {
		__builtin_memcpy(k->saddr, p->saddr, 16);
		__builtin_memcpy(k->daddr, p->daddr, 16);
	}
	k->sport = bpf_htons(sport);
	k->dport = bpf_htons(dport);
	k->endpoint_id = ep;
	k->protocol = p->protocol;
	k->family = p->family;
}

/* Count the packet against the chosen entry (Cilium's cilium_policystats key). */
static __always_inline void account(const struct decision *d, __u8 dir, __u8 protocol, __u32 len)
{
	struct policy_stats_key key = {};
	struct policy_stats_value init = { .packets = 1, .bytes = len };
	struct policy_stats_value *val;

	key.endpoint_id = d->endpoint_id;
	key.prefix_len = d->lpm_prefix;
	key.sec_label = d->l3 ? d->remote_identity : 0;
	key.egress = dir;
	key.protocol = d->lpm_prefix ? protocol : 0;
	key.dport = bpf_htons(d->key_dport);
	val = bpf_map_lookup_elem(&cil_policystats, &key);
	if (!val) {
		if (bpf_map_update_elem(&cil_policystats, &key, &init, BPF_NOEXIST) == 0)
			return;
		/* Another CPU created it between our lookup and insert. */
		val = bpf_map_lookup_elem(&cil_policystats, &key);
		if (!val)
			return;
	}
	/* Per-CPU value: no other CPU writes this slot. */
	val->packets += 1;
	val->bytes += len;
}

static __always_inline const struct cil_config *config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&cil_config, &zero);
}

static __always_inline __u32 event_mode(void)
{
	const struct cil_config *cfg = config();

	return cfg ? cfg->event_mode : CIL_EVENTS_ALL;
}

/* Write the flow event of a packet straight into the ring buffer. */
static __always_inline void emit(struct __sk_buff *skb, const struct packet *p,
				 const struct decision *d, __u8 dir)
{
	struct flow_event *ev = bpf_ringbuf_reserve(&cil_events, sizeof(*ev), 0);

	if (!ev)
		return;	/* ring full: the verdict stands, only the record is lost */
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->ts_ns = bpf_ktime_get_ns();
	ev->pkt_len = skb->len;
	ev->direction = dir;
	ev->protocol = p->protocol;
	ev->family = p->family;
	__builtin_memcpy(ev->saddr, p->saddr, 16);
	__builtin_memcpy(ev->daddr, p->daddr, 16);
	/* Both 0 and the fragment bit clear when parsing failed (nothing was read yet). */
	ev->sport = p->sport;
	ev->dport = p->dport;
	ev->tcp_flags = p->tcp_flags;
	ev->flags = d->flags | (p->fragment ? CIL_EVENT_FRAGMENT : 0);
	ev->verdict = d->verdict;
	ev->drop_reason = d->drop_reason;
	ev->endpoint_id = d->endpoint_id;
	ev->local_identity = d->local_identity;
	ev->remote_identity = d->remote_identity;
	ev->ct_state = d->ct_state;
	ev->auth_type = d->auth_type;
	ev->proxy_port = d->proxy_port;
	if (d->flags & CIL_EVENT_HAS_ENTRY) {
		ev->key_identity = d->l3 ? d->remote_identity : 0;
		ev->lpm_prefix = d->lpm_prefix;
		ev->key_protocol = d->lpm_prefix ? p->protocol : 0;
		ev->key_dport = d->key_dport;
		ev->match_type = match_type(d->l3, d->lpm_prefix);
		ev->cookie = d->cookie;
	}
	bpf_ringbuf_submit(ev, 0);
}

/* ---------------------------------------------------------------- the decision */

static __always_inline const struct endpoint_info *endpoint_of(const __u8 *addr, __u8 family)
{
	struct endpoint_key epk = {};

	__builtin_memcpy(epk.addr, addr, 16);
	epk.family = family;
	return bpf_map_lookup_elem(&cil_lxc, &epk);
}

/* The policy decision of one hook for the endpoint `ep` (NULL: no local endpoint owns the
 * hook's address, so there is no policy to enforce here). */
static __always_inline int decide(struct __sk_buff *skb, const struct packet *p, __u8 dir,
				  const struct endpoint_info *ep, struct decision *d)
{
	struct ct_key ctk = {};
	struct ct_entry *ct;
	struct policy_key pk = {};
	struct policy_entry *l3 = NULL, *l4 = NULL, *chosen, *other;
	void *policy;
	__u32 ep_id;
	__u8 auth;

	if (!ep)
		return TC_ACT_OK;	/* not a local endpoint: no policy at this hook */
	d->flags = CIL_EVENT_ENFORCED;
	d->endpoint_id = ep->endpoint_id;
	d->local_identity = ep->identity;
	d->remote_identity = ipcache_identity(dir == CIL_DIR_EGRESS ? p->daddr : p->saddr,
					      p->family);

	if (unlikely(p->unknown_l4)) {
		d->verdict = CIL_VERDICT_DROP;
		d->drop_reason = CIL_DROP_CT_UNKNOWN_PROTO;
		return TC_ACT_SHOT;
	}

	/* Conntrack: same-direction tuple = established (policy re-checked), reverse tuple
	 * created by the other hook = reply (passes without policy).  An established flow
	 * costs one lookup; only a packet without its own entry looks for the reverse one. */
	ct_fill(&ctk, p, d->endpoint_id, 0);
	ct = bpf_map_lookup_elem(&cil_ct, &ctk);
	if (ct && ct->direction == dir) {
		d->ct_state = CIL_CT_ESTABLISHED;
	} else {
		struct ct_key rev = {};

		ct_fill(&rev, p, d->endpoint_id, 1);
		ct = bpf_map_lookup_elem(&cil_ct, &rev);
		if (ct && ct->direction != dir) {
			d->ct_state = CIL_CT_REPLY;
			d->ct_flags = ct->flags;
			d->service_id = ct->rev_nat_index;	/* reverse NAT, see lb_rev_nat() */
			return TC_ACT_OK;
		}
		d->ct_state = CIL_CT_NEW;
	}

	/* allow-icmp-frag-needed: path MTU discovery must never be broken by policy. */
	if (p->family == CIL_FAMILY_IPV4 && p->protocol == IPPROTO_ICMP && !p->fragment &&
	    p->icmp_type == 3 && p->icmp_code == 4)
		return TC_ACT_OK;

	ep_id = d->endpoint_id;
	policy = bpf_map_lookup_elem(&cil_policy, &ep_id);
	if (policy) {
		pk.prefixlen = CIL_POLICY_FULL_PREFIX;
		pk.sec_label = d->remote_identity;
		pk.egress = dir;
		pk.protocol = p->protocol;
		pk.dport = bpf_htons(p->dport);
		l3 = bpf_map_lookup_elem(policy, &pk);
		/* A priority-0 deny for the exact identity cannot be beaten: skip lookup two. */
		if (!l3 || l3->precedence != CIL_PRECEDENCE_MAX) {
			pk.sec_label = 0;
			l4 = bpf_map_lookup_elem(policy, &pk);
		}
	}
	if (l3 && l3->precedence == CIL_PRECEDENCE_MAX) {
		chosen = l3;
		other = NULL;
	} else if (l4 && (!l3 || l4->precedence > l3->precedence ||
			  (l4->precedence == l3->precedence && entry_lpm(l4) > entry_lpm(l3)))) {
		chosen = l4;
		other = l3;
	} else {
		chosen = l3;
		other = l4;
	}
	if (!chosen) {
		d->verdict = CIL_VERDICT_DROP;
		d->drop_reason = p->fragment ? CIL_DROP_FRAG_NOSUPPORT : CIL_DROP_POLICY;
		return TC_ACT_SHOT;
	}

	d->flags |= CIL_EVENT_HAS_ENTRY;
	d->l3 = chosen == l3;
	d->lpm_prefix = entry_lpm(chosen);
	if (d->lpm_prefix > 8)
		d->key_dport = p->dport & (__u16)(0xFFFF << (24 - d->lpm_prefix));
	d->cookie = chosen->cookie;
	account(d, dir, p->protocol, skb->len);

	if (chosen->flags & CIL_POLICY_ENTRY_DENY) {
		d->verdict = CIL_VERDICT_DROP;
		d->drop_reason = CIL_DROP_POLICY_DENY;
		return TC_ACT_SHOT;
	}

	/* A derived (non-explicit) auth type yields to a higher one of an equal-precedence
	 * entry from the other lookup. */
	auth = chosen->auth & CIL_AUTH_TYPE_MASK;
	if (!(chosen->auth & CIL_AUTH_EXPLICIT) && other &&
	    other->precedence == chosen->precedence &&
	    (other->auth & CIL_AUTH_TYPE_MASK) > auth)
		auth = other->auth & CIL_AUTH_TYPE_MASK;
	d->auth_type = auth;
	if (auth) {
		struct auth_key ak = {};
		struct auth_info *ai;

		ak.local_id = d->local_identity;
		ak.remote_id = d->remote_identity;
		ak.auth_type = auth;
		ai = bpf_map_lookup_elem(&cil_auth, &ak);
		/* The clock is read only for a pair that can expire. */
		if (!ai || (ai->expiration && ai->expiration < bpf_ktime_get_ns())) {
			d->verdict = CIL_VERDICT_DROP;
			d->drop_reason = CIL_DROP_POLICY_AUTH_REQUIRED;
			return TC_ACT_SHOT;
		}
	}

	if (d->ct_state == CIL_CT_NEW) {
		struct ct_entry fresh = {};

		fresh.created_ns = bpf_ktime_get_ns();
		fresh.direction = dir;
		fresh.rev_nat_index = d->service_id;
		bpf_map_update_elem(&cil_ct, &ctk, &fresh, BPF_ANY);
	}
	d->proxy_port = bpf_ntohs(chosen->proxy_port);
	/* A redirect passes here; cil_from_container hands it to a lab proxy (bpf/proxy.h). */
	d->verdict = d->proxy_port ? CIL_VERDICT_REDIRECT : CIL_VERDICT_ALLOW;
	return TC_ACT_OK;
}

static __always_inline int wants_event(__u32 mode, const struct decision *d)
{
	return mode == CIL_EVENTS_ALL || (mode == CIL_EVENTS_DROPS && d->verdict == CIL_VERDICT_DROP);
}

#include "proxy.h"

/* The proxy port a redirect goes to when lab proxies run, else 0 (the packet passes). */
static __always_inline __u16 proxy_target(const struct decision *d)
{
	if (likely(d->verdict != CIL_VERDICT_REDIRECT) || !proxy_redirect_enabled())
		return 0;
	return d->proxy_port;
}

/*
 * Local delivery, as Cilium does it with BPF host routing: when the destination is an
 * endpoint of this node whose device is known, its ingress policy is enforced right here
 * (Cilium tail-calls the destination's policy program) and the packet is handed straight
 * to the destination's namespace with bpf_redirect_peer().  The node's IP forwarding and
 * the destination veth's egress, where cil_to_container sits, are skipped: one program
 * per packet instead of two.  Like a router, the TTL / hop limit is decremented and the
 * Ethernet addresses are rewritten (source = node side, destination = endpoint).
 *
 * Only for packets that really arrived on the source endpoint's own device: in
 * BPF_PROG_TEST_RUN (which runs on the loopback device) and on any other device the hook
 * keeps its own scope, so the test-run evaluation of each hook is not changed by a lab.
 * And only when the rewrite cannot fail -- a TTL above 1 and linear L2/L3 headers -- is
 * the destination's policy run here; otherwise the stack forwards the packet (and sends
 * ICMP time-exceeded) and cil_to_container judges it on the destination device as usual,
 * so no packet is ever judged twice by the same endpoint.
 */
static __always_inline int can_deliver(struct __sk_buff *skb, const struct packet *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 l3 = p->family == CIL_FAMILY_IPV4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);

	return p->ttl > 1 && data + ETH_HLEN + l3 <= data_end;
}

static __always_inline int deliver(struct __sk_buff *skb, const struct packet *p,
				   const struct endpoint_info *ep)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if (p->family == CIL_FAMILY_IPV4) {
		struct iphdr *ip = data + ETH_HLEN;
		__u32 check;

		if ((void *)(ip + 1) > data_end)
			return TC_ACT_SHOT;	/* can_deliver() said otherwise: fail closed */
		/* RFC 1624 incremental update for TTL - 1, as the kernel's ip_decrease_ttl(). */
		check = ip->check;
		check += bpf_htons(0x0100);
		ip->check = (__u16)(check + (check >= 0xFFFF));
		ip->ttl--;
	} else {
		struct ipv6hdr *ip6 = data + ETH_HLEN;

		if ((void *)(ip6 + 1) > data_end)
			return TC_ACT_SHOT;
		ip6->hop_limit--;
	}
	__builtin_memcpy(eth->h_dest, ep->mac, 6);
	__builtin_memcpy(eth->h_source, ep->node_mac, 6);
	return bpf_redirect_peer(ep->ifindex, 0);
}

#include "lb.h"

/* Parse a frame; an unparseable IP packet is decided (dropped, 134) here. */
static __always_inline int parse(struct __sk_buff *skb, struct packet *p, struct decision *d)
{
	int parsed = parse_packet(skb, p);

	/* Conntrack knows TCP, UDP, SCTP and the family's ICMP; anything else is dropped at an
	 * endpoint's hook before policy unless extended IP protocols are enabled.  Decided
	 * once per packet, here, so each inlined decision only tests a flag (the config is
	 * read only for such a rare packet). */
	if (parsed == PARSE_OK && unlikely(!is_known_l4(p))) {
		const struct cil_config *cfg = config();

		p->unknown_l4 = !cfg || !cfg->extended_ip_protocols;
	}
	if (parsed == PARSE_INVALID) {
		/* Fail closed before any endpoint is looked up. */
		d->verdict = CIL_VERDICT_DROP;
		d->drop_reason = CIL_DROP_INVALID;
	}
	return parsed;
}

SEC("tc")
int cil_from_container(struct __sk_buff *skb)
{
	struct packet p = {};
	struct decision d = {};
	const struct endpoint_info *src, *dst;
	__u32 mode;
	__u16 proxy_port;
	__u8 dir = CIL_DIR_EGRESS;
	int ret = TC_ACT_SHOT;

	/* Keep p in memory.  Split into registers by clang, each field needs its own zero on
	 * every exit path of the parser, mostly spilled to the stack again: a quarter of the
	 * program's instructions went to that. */
	asm volatile("" : : "r"(&p) : "memory");
	switch (parse(skb, &p, &d)) {
	case PARSE_NOT_IP:
		return TC_ACT_OK;	/* ARP and other non-IP traffic is not subject to policy */
	case PARSE_OK:
		src = endpoint_of(p.saddr, p.family);
		ret = lb_translate(skb, &p, src, &d);
		if (ret == TC_ACT_OK)
			ret = decide(skb, &p, CIL_DIR_EGRESS, src, &d);
		break;
	default:
		src = NULL;
	}
	/* Read once per packet; emitting every packet is the diagnostic mode, not the fast one. */
	mode = event_mode();
	if (unlikely(wants_event(mode, &d)))
		emit(skb, &p, &d, CIL_DIR_EGRESS);
	if (ret != TC_ACT_OK || !src || !src->ifindex || src->ifindex != skb->ifindex)
		return ret;

	/* The source's egress redirects to a proxy, or the packet answers a proxy's upstream
	 * connection: either way it is for the node's stack, not the destination. */
	proxy_port = proxy_target(&d);
	if (!proxy_port) {
		if (unlikely(reply_to_proxy(&d))) {
			skb->mark = CIL_MARK_TO_PROXY;
			return TC_ACT_OK;
		}
		dst = endpoint_of(p.daddr, p.family);
		if (!dst || !dst->ifindex || !can_deliver(skb, &p))
			return TC_ACT_OK;	/* the stack routes it; cil_to_container judges it there */
		__builtin_memset(&d, 0, sizeof(d));
		dir = CIL_DIR_INGRESS;
		ret = decide(skb, &p, CIL_DIR_INGRESS, dst, &d);
		if (ret == TC_ACT_OK)
			ret = lb_rev_nat(skb, &p, &d);
		if (unlikely(wants_event(mode, &d)))
			emit(skb, &p, &d, CIL_DIR_INGRESS);
		if (ret != TC_ACT_OK)
			return ret;
		proxy_port = proxy_target(&d);
		if (!proxy_port)
			return deliver(skb, &p, dst);
	}
	/* One call site for both hooks' redirects keeps the verifier's work down. */
	ret = to_proxy(skb, &p, proxy_port);
	if (likely(!ret))
		return TC_ACT_OK;
	d.verdict = CIL_VERDICT_DROP;
	d.drop_reason = ret;
	if (wants_event(mode, &d))
		emit(skb, &p, &d, dir);
	return TC_ACT_SHOT;
}

SEC("tc")
int cil_to_container(struct __sk_buff *skb)
{
	struct packet p = {};
	struct decision d = {};
	int ret = TC_ACT_SHOT;

	asm volatile("" : : "r"(&p) : "memory");
	switch (parse(skb, &p, &d)) {
	case PARSE_NOT_IP:
		return TC_ACT_OK;
	case PARSE_OK:
		ret = decide(skb, &p, CIL_DIR_INGRESS, endpoint_of(p.daddr, p.family), &d);
		if (ret == TC_ACT_OK)
			ret = lb_rev_nat(skb, &p, &d);
		if (unlikely(skb->mark) && ret == TC_ACT_OK)
			note_proxy_upstream(skb, &p, &d);
		break;
	default:
		break;
	}
	if (unlikely(wants_event(event_mode(), &d)))
		emit(skb, &p, &d, CIL_DIR_INGRESS);
	return ret;
}
