/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Transparent redirection to the L7 proxies of a live lab, as Cilium does it with
 * bpf_sk_assign() ("BPF TPROXY", bpf/lib/proxy.h upstream).
 *
 * The proxies (ciliumpy/lab/_proxy.py) listen in the node's namespace on the proxy ports of
 * the policy map, with IP_TRANSPARENT sockets.  A packet whose verdict is REDIRECT is given
 * to the proxy's socket -- the connection's own accepted socket when there is one, else the
 * listener on the proxy port -- with bpf_sk_assign() and marked CIL_MARK_TO_PROXY; the node
 * routes marked packets to its loopback (`ip rule fwmark 0x200/0xf00 lookup 2004`, `local
 * default dev lo table 2004`), so the stack delivers them to the assigned socket with their
 * addresses untouched: the proxy sees the original destination as its socket's own address.
 *
 * The proxy opens its upstream connection from the client's address (IP_TRANSPARENT) with
 * SO_MARK = CIL_MARK_FROM_PROXY.  cil_to_container judges it as any other packet (the
 * destination's ingress policy) and flags its conntrack entry CIL_CT_F_PROXY; the replies
 * then carry that flag in cil_from_container, which marks them CIL_MARK_TO_PROXY and leaves
 * them to the stack instead of delivering them into the client's namespace.
 *
 * Fail closed: with proxy_redirect set in cil_config, a redirect that finds no proxy socket
 * is dropped (CIL_DROP_PROXY_LOOKUP_FAILED), as is one of a protocol without proxies.
 * Without it (no lab proxies), a redirect passes at L3/L4 and says so in its event.
 *
 * Included by ciliumpy.bpf.c after its packet, decision and config definitions.
 */
#ifndef CILIUMPY_PROXY_H
#define CILIUMPY_PROXY_H

/* Cilium's MARK_MAGIC_TO_PROXY and MARK_MAGIC_PROXY_INGRESS, under its 0xF00 mask. */
#define CIL_MARK_MASK 0x0F00
#define CIL_MARK_TO_PROXY 0x0200
#define CIL_MARK_FROM_PROXY 0x0A00

/* ct_entry.flags */
#define CIL_CT_F_PROXY 0x01	/* the connection was opened by a lab proxy (upstream side) */

#define BPF_F_CURRENT_NETNS (-1L)
#define BPF_TCP_TIME_WAIT 6
#define BPF_TCP_LISTEN 10

struct bpf_sock_tuple {
	union {
		struct {
			__be32 saddr;
			__be32 daddr;
			__be16 sport;
			__be16 dport;
		} ipv4;
		struct {
			__be32 saddr[4];
			__be32 daddr[4];
			__be16 sport;
			__be16 dport;
		} ipv6;
	};
};

/* UAPI struct bpf_sock, up to `state` (the only field read here). */
struct bpf_sock {
	__u32 bound_dev_if;
	__u32 family;
	__u32 type;
	__u32 protocol;
	__u32 mark;
	__u32 priority;
	__u32 src_ip4;
	__u32 src_ip6[4];
	__u32 src_port;
	__be16 dst_port;
	__u16 pad;
	__u32 dst_ip4;
	__u32 dst_ip6[4];
	__u32 state;
};

static struct bpf_sock *(*bpf_sk_lookup_udp)(void *ctx, struct bpf_sock_tuple *tuple,
					     __u32 tuple_size, __u64 netns,
					     __u64 flags) = (void *)85;
static long (*bpf_sk_release)(void *sock) = (void *)86;
static struct bpf_sock *(*bpf_skc_lookup_tcp)(void *ctx, struct bpf_sock_tuple *tuple,
					      __u32 tuple_size, __u64 netns,
					      __u64 flags) = (void *)99;
static long (*bpf_sk_assign)(void *ctx, void *sk, __u64 flags) = (void *)124;

static __always_inline int proxy_redirect_enabled(void)
{
	const struct cil_config *cfg = config();

	return cfg && cfg->proxy_redirect;
}

/* Look a socket up in the node's namespace and assign the packet to it.  `established`:
 * only a connection's own socket will do (not a listener, not a TIME_WAIT). */
static __always_inline int proxy_assign(struct __sk_buff *skb, struct bpf_sock_tuple *tuple,
					__u32 len, __u8 protocol, int established)
{
	struct bpf_sock *sk;
	long err;

	if (protocol == IPPROTO_TCP)
		sk = bpf_skc_lookup_tcp(skb, tuple, len, BPF_F_CURRENT_NETNS, 0);
	else
		sk = bpf_sk_lookup_udp(skb, tuple, len, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return CIL_DROP_PROXY_LOOKUP_FAILED;
	if (established && protocol == IPPROTO_TCP &&
	    (sk->state == BPF_TCP_TIME_WAIT || sk->state == BPF_TCP_LISTEN)) {
		bpf_sk_release(sk);
		return CIL_DROP_PROXY_LOOKUP_FAILED;
	}
	err = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	return err ? CIL_DROP_PROXY_SET_FAILED : 0;
}

/*
 * Hand a redirected packet to the proxy listening on `proxy_port` (host order).  Returns 0
 * when the packet was assigned and marked (the caller returns TC_ACT_OK), else a drop
 * reason.  Only the addresses and ports of the family in use are filled in, and the tuple
 * is passed with that family's size, which is how the helpers tell the families apart.
 */
static __always_inline int to_proxy(struct __sk_buff *skb, const struct packet *p,
				    __u16 proxy_port)
{
	struct bpf_sock_tuple tuple = {};
	__u32 len;
	int ret;

	if (p->protocol != IPPROTO_TCP && p->protocol != IPPROTO_UDP)
		return CIL_DROP_PROXY_UNKNOWN_PROTO;
	if (p->family == CIL_FAMILY_IPV4) {
		len = sizeof(tuple.ipv4);
		__builtin_memcpy(&tuple.ipv4.saddr, p->saddr, 4);
		__builtin_memcpy(&tuple.ipv4.daddr, p->daddr, 4);
		tuple.ipv4.sport = bpf_htons(p->sport);
		tuple.ipv4.dport = bpf_htons(p->dport);
	} else {
		len = sizeof(tuple.ipv6);
		__builtin_memcpy(tuple.ipv6.saddr, p->saddr, 16);
		__builtin_memcpy(tuple.ipv6.daddr, p->daddr, 16);
		tuple.ipv6.sport = bpf_htons(p->sport);
		tuple.ipv6.dport = bpf_htons(p->dport);
	}
	/* A TCP connection's own (accepted) socket first ... UDP has none: the DNS proxy reads
	 * every query from its listener, and the only other UDP sockets here bound to a pod's
	 * address (the proxy's reply sockets, bound to the original destination) must never
	 * catch a query. */
	ret = CIL_DROP_PROXY_LOOKUP_FAILED;
	if (p->protocol == IPPROTO_TCP)
		ret = proxy_assign(skb, &tuple, len, p->protocol, 1);
	if (ret) {
		/* ... else the proxy's listener: any address, the proxy port. */
		__builtin_memset(&tuple, 0, sizeof(tuple));
		if (p->family == CIL_FAMILY_IPV4)
			tuple.ipv4.dport = bpf_htons(proxy_port);
		else
			tuple.ipv6.dport = bpf_htons(proxy_port);
		ret = proxy_assign(skb, &tuple, len, p->protocol, 0);
	}
	if (!ret)
		skb->mark = CIL_MARK_TO_PROXY;
	return ret;
}

/* A reply to a connection a proxy opened: the stack must deliver it to the proxy. */
static __always_inline int reply_to_proxy(const struct decision *d)
{
	return d->ct_state == CIL_CT_REPLY && (d->ct_flags & CIL_CT_F_PROXY);
}

/* cil_to_container: a packet of a proxy's upstream connection that the destination's
 * policy let through flags the connection's conntrack entry, so that its replies go back
 * to the proxy (reply_to_proxy) rather than into the client's namespace. */
static __always_inline void note_proxy_upstream(struct __sk_buff *skb, const struct packet *p,
						const struct decision *d)
{
	struct ct_key key = {};
	struct ct_entry *ct;

	if ((skb->mark & CIL_MARK_MASK) != CIL_MARK_FROM_PROXY || !d->endpoint_id)
		return;
	ct_fill(&key, p, d->endpoint_id, 0);
	ct = bpf_map_lookup_elem(&cil_ct, &key);
	if (ct && !(ct->flags & CIL_CT_F_PROXY))
		ct->flags |= CIL_CT_F_PROXY;
}

#endif /* CILIUMPY_PROXY_H */
