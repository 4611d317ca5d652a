"""One test per validation rule: the agent's ``Validate`` checks, the CRD schema and the
Kubernetes API server's checks, each read from a file.

Every case is a whole manifest; the line marked ``#!`` is where the error must point. The
test asserts the message, the field path, the offending value, the file and the line.
Messages follow upstream wording (pkg/policy/api/rule_validation.go, the CRD schema in
pkg/k8s/apis/cilium.io/client/crds/v2/, k8s.io/kubernetes validation) where it exists.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from ciliumpy import Cluster, PolicyError
from ciliumpy._manifests import load_objects

MISSING = object()

CNP_HEAD = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: p
  namespace: prod
spec:
"""


def cnp(body: str) -> str:
    """A CiliumNetworkPolicy ``prod/p`` whose ``spec`` is ``body`` (indented by the caller)."""
    return CNP_HEAD + body


def spec_with(rules: str, selector: str = "endpointSelector: {matchLabels: {app: web}}") -> str:
    return cnp(f"  {selector}\n" + textwrap.indent(textwrap.dedent(rules), "  "))


NP_HEAD = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: np
  namespace: prod
spec:
"""


def np_(body: str) -> str:
    return NP_HEAD + textwrap.indent(textwrap.dedent(body), "  ")


FORTY_ONE_PORTS = "\n".join(f'      - port: "{1000 + i}"' for i in range(41))
FORTY_ONE_TYPES = "\n".join(f"      - type: {i}" for i in range(41))

# (rule id, manifest, reason (substring for parser-dependent texts), field, value, kind)
CASES: list[tuple[str, str, str, str | None, Any, str | None]] = [
    # ---- documents and objects -----------------------------------------------------------
    (
        "malformed-yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n\tname: a  #!\n",
        "malformed YAML: found character that cannot start any token",
        None,
        MISSING,
        None,
    ),
    (
        "duplicate-key",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  name: b  #!\n",
        "malformed YAML: found duplicate key 'name'",
        None,
        MISSING,
        None,
    ),
    (
        "document-not-a-mapping",
        "- just  #!\n- a list\n",
        "a manifest must be a mapping",
        None,
        ["just", "a list"],
        None,
    ),
    (
        "unknown-kind",
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicyy  #!\nmetadata: {name: p}\n",
        "unknown kind; expected one of",
        "kind",
        "CiliumNetworkPolicyy",
        None,
    ),
    (
        "wrong-api-version",
        "apiVersion: cilium.io/v1  #!\nkind: CiliumNetworkPolicy\nmetadata: {name: p}\n",
        "apiVersion must be cilium.io/v2 for CiliumNetworkPolicy",
        "apiVersion",
        "cilium.io/v1",
        "CiliumNetworkPolicy",
    ),
    (
        "unknown-top-level-field",
        cnp("  endpointSelector: {}\n  ingress: [{}]\nstatuss: {}  #!\n"),
        'unknown field "statuss"',
        "statuss",
        {},
        "CiliumNetworkPolicy",
    ),
    (
        "unknown-rule-field",
        cnp("  endpointSelector: {}\n  ingres: [{}]  #!\n"),
        'unknown field "ingres"',
        "spec.ingres",
        [{}],
        "CiliumNetworkPolicy",
    ),
    (
        "unknown-metadata-field",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  lables: {x: y}  #!\n",
        'unknown field "lables"',
        "metadata.lables",
        {"x": "y"},
        "Namespace",
    ),
    (
        "metadata-missing",
        "apiVersion: cilium.io/v2  #!\nkind: CiliumNetworkPolicy\nspec: {}\n",
        "Required value: metadata",
        "metadata",
        None,
        "CiliumNetworkPolicy",
    ),
    (
        "name-missing",
        "apiVersion: v1\nkind: Namespace\nmetadata:  #!\n  labels: {a: b}\n",
        "name or generateName is required",
        "metadata.name",
        None,
        "Namespace",
    ),
    (
        "name-not-rfc1123-subdomain",
        cnp("  endpointSelector: {}\n  ingress: [{}]\n").replace("name: p", "name: Allow_Web  #!"),
        "invalid name: a lowercase RFC 1123 subdomain",
        "metadata.name",
        "Allow_Web",
        "CiliumNetworkPolicy",
    ),
    (
        "namespace-not-rfc1123-label",
        cnp("  endpointSelector: {}\n  ingress: [{}]\n").replace("namespace: prod", "namespace: prod.eu  #!"),
        "invalid name: a lowercase RFC 1123 label",
        "metadata.namespace",
        "prod.eu",
        "CiliumNetworkPolicy",
    ),
    (
        "service-name-not-dns1035",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: 1api  #!\n  namespace: prod\n",
        "invalid name: a DNS-1035 label",
        "metadata.name",
        "1api",
        "Service",
    ),
    (
        "cluster-scoped-with-namespace",
        "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n"
        "  name: c\n  namespace: prod  #!\nspec: {endpointSelector: {}, ingress: [{}]}\n",
        "a cluster-scoped object has no namespace",
        "metadata.namespace",
        "prod",
        "CiliumClusterwideNetworkPolicy",
    ),
    (
        "metadata-label-bad-key",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  labels:\n    team/: x  #!\n",
        "invalid label key: name part",
        "metadata.labels.team/",
        "team/",
        "Namespace",
    ),
    (
        "metadata-label-not-a-string",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  labels:\n    tier: 3  #!\n",
        "label value must be of type string",
        "metadata.labels.tier",
        3,
        "Namespace",
    ),
    (
        "list-item-invalid",
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n"
        "  metadata: {name: ok}\n- apiVersion: v1\n  kind: Namespace\n  metadata:\n"
        "    name: Not-OK  #!\n",
        "invalid name",
        "metadata.name",
        "Not-OK",
        "Namespace",
    ),
    # ---- rule shape ---------------------------------------------------------------------
    (
        "spec-or-specs-required",
        "apiVersion: cilium.io/v2  #!\nkind: CiliumNetworkPolicy\nmetadata: {name: p}\n",
        "spec or specs must be provided",
        "spec",
        None,
        "CiliumNetworkPolicy",
    ),
    (
        "no-sections",
        cnp("  endpointSelector: {}\n").replace("spec:", "spec:  #!"),
        "rule must have at least one of Ingress, IngressDeny, Egress, EgressDeny",
        "spec",
        {"endpointSelector": {}},
        "CiliumNetworkPolicy",
    ),
    (
        "empty-sections-count-as-none",
        cnp("  endpointSelector: {}\n  ingress: []\n  egressDeny: []\n").replace("spec:", "spec:  #!"),
        "rule must have at least one of Ingress, IngressDeny, Egress, EgressDeny",
        "spec",
        {"endpointSelector": {}, "ingress": [], "egressDeny": []},
        "CiliumNetworkPolicy",
    ),
    (
        "neither-selector",
        cnp("  ingress: [{}]\n").replace("spec:", "spec:  #!"),
        "rule must have one of EndpointSelector or NodeSelector",
        "spec",
        {"ingress": [{}]},
        "CiliumNetworkPolicy",
    ),
    (
        "both-selectors",
        cnp("  endpointSelector: {}\n  nodeSelector: {}  #!\n  ingress: [{}]\n"),
        "rule cannot have both EndpointSelector and NodeSelector",
        "spec.nodeSelector",
        {},
        "CiliumNetworkPolicy",
    ),
    (
        "cnp-node-selector",
        cnp("  nodeSelector: {}  #!\n  ingress: [{}]\n"),
        "rule cannot have NodeSelector",
        "spec.nodeSelector",
        {},
        "CiliumNetworkPolicy",
    ),
    (
        "specs-item-invalid",
        CNP_HEAD.replace("spec:\n", "specs:\n")
        + "- endpointSelector: {}\n  ingress: [{}]\n- endpointSelector: {}  #!\n",
        "rule must have at least one of Ingress",
        "specs[1]",
        {"endpointSelector": {}},
        "CiliumNetworkPolicy",
    ),
    (
        "section-not-a-list",
        spec_with("ingress:  #!\n  fromEndpoints: [{}]\n"),
        "must be of type array",
        "spec.ingress",
        {"fromEndpoints": [{}]},
        "CiliumNetworkPolicy",
    ),
    (
        "selector-not-a-mapping",
        spec_with("ingress: [{}]\n", selector="endpointSelector: [app]  #!"),
        "must be of type object",
        "spec.endpointSelector",
        ["app"],
        "CiliumNetworkPolicy",
    ),
    (
        "enable-default-deny-not-boolean",
        spec_with('ingress: [{}]\nenableDefaultDeny:\n  ingress: "no"  #!\n'),
        "must be of type boolean",
        "spec.enableDefaultDeny.ingress",
        "no",
        "CiliumNetworkPolicy",
    ),
    (
        "description-not-a-string",
        spec_with("ingress: [{}]\ndescription: 42  #!\n"),
        "must be of type string",
        "spec.description",
        42,
        "CiliumNetworkPolicy",
    ),
    (
        "rule-label-not-an-object",
        spec_with("ingress: [{}]\nlabels:\n- team=a  #!\n"),
        "must be of type object",
        "spec.labels[0]",
        "team=a",
        "CiliumNetworkPolicy",
    ),
    (
        "rule-label-without-key",
        spec_with("ingress: [{}]\nlabels:\n- value: a  #!\n"),
        "Required value: label key",
        "spec.labels[0].key",
        None,
        "CiliumNetworkPolicy",
    ),
    (
        "log-value-too-long",
        spec_with("ingress: [{}]\nlog:\n  value: " + "x" * 33 + "  #!\n"),
        "log value must be at most 32 printable characters",
        "spec.log.value",
        "x" * 33,
        "CiliumNetworkPolicy",
    ),
    (
        "log-value-control-character",
        spec_with('ingress: [{}]\nlog:\n  value: "a\\tb"  #!\n'),
        "log value must be at most 32 printable characters",
        "spec.log.value",
        "a\tb",
        "CiliumNetworkPolicy",
    ),
    # ---- peers --------------------------------------------------------------------------
    (
        "two-peer-kinds-ingress",
        spec_with("ingress:\n- fromEndpoints: [{}]\n  fromCIDR: [10.0.0.0/8]  #!\n"),
        "combining FromEndpoints and FromCIDR is not supported yet",
        "spec.ingress[0].fromCIDR",
        ["10.0.0.0/8"],
        "CiliumNetworkPolicy",
    ),
    (
        "two-peer-kinds-egress",
        spec_with("egress:\n- toEndpoints: [{}]\n  toFQDNs:  #!\n  - matchName: example.com\n"),
        "combining ToEndpoints and ToFQDNs is not supported yet",
        "spec.egress[0].toFQDNs",
        [{"matchName": "example.com"}],
        "CiliumNetworkPolicy",
    ),
    (
        "requires-removed",
        spec_with("ingress:\n- fromRequires:  #!\n  - matchLabels: {env: prod}\n"),
        "fromRequires was removed in Cilium 1.19; the CRD allows at most 0 items",
        "spec.ingress[0].fromRequires",
        [{"matchLabels": {"env": "prod"}}],
        "CiliumNetworkPolicy",
    ),
    (
        "entity-unknown",
        spec_with("ingress:\n- fromEntities:\n  - internet  #!\n"),
        "unsupported entity: internet",
        "spec.ingress[0].fromEntities[0]",
        "internet",
        "CiliumNetworkPolicy",
    ),
    (
        "entity-world-ipv4-not-in-crd-enum",
        spec_with("egress:\n- toEntities:\n  - world-ipv4  #!\n"),
        "unsupported entity: world-ipv4",
        "spec.egress[0].toEntities[0]",
        "world-ipv4",
        "CiliumNetworkPolicy",
    ),
    (
        "authentication-mode-enum",
        spec_with("ingress:\n- fromEndpoints: [{}]\n  authentication:\n    mode: spire  #!\n"),
        'Unsupported value: supported values: "disabled", "required", "test-always-fail"',
        "spec.ingress[0].authentication.mode",
        "spire",
        "CiliumNetworkPolicy",
    ),
    (
        "authentication-in-deny-rule",
        spec_with("ingressDeny:\n- fromEndpoints: [{}]\n  authentication:  #!\n    mode: required\n"),
        'unknown field "authentication"',
        "spec.ingressDeny[0].authentication",
        {"mode": "required"},
        "CiliumNetworkPolicy",
    ),
    (
        "to-fqdns-in-deny-rule",
        spec_with("egressDeny:\n- toFQDNs:  #!\n  - matchName: example.com\n"),
        'unknown field "toFQDNs"',
        "spec.egressDeny[0].toFQDNs",
        [{"matchName": "example.com"}],
        "CiliumNetworkPolicy",
    ),
    # ---- CIDR ---------------------------------------------------------------------------
    (
        "cidr-bare-ip",
        spec_with("egress:\n- toCIDR:\n  - 192.0.2.1  #!\n"),
        "must be of type cidr",
        "spec.egress[0].toCIDR[0]",
        "192.0.2.1",
        "CiliumNetworkPolicy",
    ),
    (
        "cidr-garbage",
        spec_with("egress:\n- toCIDR:\n  - 10.0.0.0/33  #!\n"),
        "must be of type cidr",
        "spec.egress[0].toCIDR[0]",
        "10.0.0.0/33",
        "CiliumNetworkPolicy",
    ),
    (
        "cidr-empty",
        spec_with('egress:\n- toCIDR:\n  - ""  #!\n'),
        "IP must be specified",
        "spec.egress[0].toCIDR[0]",
        "",
        "CiliumNetworkPolicy",
    ),
    (
        "cidr-rule-without-source",
        spec_with("egress:\n- toCIDRSet:\n  - except: [10.1.0.0/16]  #!\n"),
        "one of cidr, cidrGroupRef, or cidrGroupSelector is required",
        "spec.egress[0].toCIDRSet[0]",
        {"except": ["10.1.0.0/16"]},
        "CiliumNetworkPolicy",
    ),
    (
        "cidr-rule-two-sources",
        spec_with("egress:\n- toCIDRSet:\n  - cidr: 10.0.0.0/8  #!\n    cidrGroupRef: office\n"),
        "more than one of cidr, cidrGroupRef, or cidrGroupSelector may not be set",
        "spec.egress[0].toCIDRSet[0]",
        {"cidr": "10.0.0.0/8", "cidrGroupRef": "office"},
        "CiliumNetworkPolicy",
    ),
    (
        "cidr-rule-bad-cidr",
        spec_with("egress:\n- toCIDRSet:\n  - cidr: 10.0.0.1  #!\n"),
        "must be of type cidr",
        "spec.egress[0].toCIDRSet[0].cidr",
        "10.0.0.1",
        "CiliumNetworkPolicy",
    ),
    (
        "except-not-contained",
        spec_with("egress:\n- toCIDRSet:\n  - cidr: 10.0.0.0/8\n    except:\n    - 11.0.0.0/24  #!\n"),
        "allow CIDR prefix 10.0.0.0/8 does not contain exclude CIDR prefix 11.0.0.0/24",
        "spec.egress[0].toCIDRSet[0].except[0]",
        "11.0.0.0/24",
        "CiliumNetworkPolicy",
    ),
    (
        "except-other-family",
        spec_with("egress:\n- toCIDRSet:\n  - cidr: 10.0.0.0/8\n    except:\n    - 2001:db8::/64  #!\n"),
        "allow CIDR prefix 10.0.0.0/8 does not contain exclude CIDR prefix 2001:db8::/64",
        "spec.egress[0].toCIDRSet[0].except[0]",
        "2001:db8::/64",
        "CiliumNetworkPolicy",
    ),
    (
        # Cilium 1.19 (CIDRRule.sanitize) also rejects an except broader than its CIDR.
        "except-broader-than-cidr",
        spec_with("egress:\n- toCIDRSet:\n  - cidr: 10.0.0.0/24\n    except:\n    - 10.0.0.0/16  #!\n"),
        "allow CIDR prefix 10.0.0.0/24 does not contain exclude CIDR prefix 10.0.0.0/16",
        "spec.egress[0].toCIDRSet[0].except[0]",
        "10.0.0.0/16",
        "CiliumNetworkPolicy",
    ),
    (
        "except-bare-ip",
        spec_with("egress:\n- toCIDRSet:\n  - cidr: 10.0.0.0/8\n    except:\n    - 10.1.1.1  #!\n"),
        "must be of type cidr",
        "spec.egress[0].toCIDRSet[0].except[0]",
        "10.1.1.1",
        "CiliumNetworkPolicy",
    ),
    (
        "cidr-group-ref-not-a-name",
        spec_with("ingress:\n- fromCIDRSet:\n  - cidrGroupRef: Office_Net  #!\n"),
        "invalid name",
        "spec.ingress[0].fromCIDRSet[0].cidrGroupRef",
        "Office_Net",
        "CiliumNetworkPolicy",
    ),
    # ---- ports --------------------------------------------------------------------------
    (
        "port-missing",
        spec_with("ingress:\n- toPorts:\n  - ports:\n    - protocol: TCP  #!\n"),
        "port must be specified",
        "spec.ingress[0].toPorts[0].ports[0].port",
        None,
        "CiliumNetworkPolicy",
    ),
    (
        "port-not-a-string",
        spec_with("ingress:\n- toPorts:\n  - ports:\n    - port: 80  #!\n"),
        "must be of type string",
        "spec.ingress[0].toPorts[0].ports[0].port",
        80,
        "CiliumNetworkPolicy",
    ),
    (
        "port-out-of-range",
        spec_with('ingress:\n- toPorts:\n  - ports:\n    - port: "70000"  #!\n'),
        'unable to parse port: strconv.ParseUint: parsing "70000": value out of range',
        "spec.ingress[0].toPorts[0].ports[0].port",
        "70000",
        "CiliumNetworkPolicy",
    ),
    (
        "port-invalid-syntax",
        spec_with('ingress:\n- toPorts:\n  - ports:\n    - port: "-1"  #!\n'),
        'unable to parse port: strconv.ParseUint: parsing "-1": invalid syntax',
        "spec.ingress[0].toPorts[0].ports[0].port",
        "-1",
        "CiliumNetworkPolicy",
    ),
    (
        "port-name-double-dash",
        spec_with('ingress:\n- toPorts:\n  - ports:\n    - port: "web--tls"  #!\n'),
        'unable to parse port: strconv.ParseUint: parsing "web--tls": invalid syntax',
        "spec.ingress[0].toPorts[0].ports[0].port",
        "web--tls",
        "CiliumNetworkPolicy",
    ),
    (
        "port-name-too-long",
        spec_with('ingress:\n- toPorts:\n  - ports:\n    - port: "metrics-exporter"  #!\n'),
        'unable to parse port: strconv.ParseUint: parsing "metrics-exporter": invalid syntax',
        "spec.ingress[0].toPorts[0].ports[0].port",
        "metrics-exporter",
        "CiliumNetworkPolicy",
    ),
    (
        "end-port-out-of-range",
        spec_with('ingress:\n- toPorts:\n  - ports:\n    - port: "80"\n      endPort: 70000  #!\n'),
        "endPort must be within 0..65535",
        "spec.ingress[0].toPorts[0].ports[0].endPort",
        70000,
        "CiliumNetworkPolicy",
    ),
    (
        "end-port-not-an-integer",
        spec_with('ingress:\n- toPorts:\n  - ports:\n    - port: "80"\n      endPort: "90"  #!\n'),
        "must be of type integer",
        "spec.ingress[0].toPorts[0].ports[0].endPort",
        "90",
        "CiliumNetworkPolicy",
    ),
    (
        "protocol-enum",
        spec_with('ingress:\n- toPorts:\n  - ports:\n    - port: "0"\n      protocol: ICMP  #!\n'),
        'Unsupported value: supported values: "TCP", "UDP", "SCTP", "ANY"',
        "spec.ingress[0].toPorts[0].ports[0].protocol",
        "ICMP",
        "CiliumNetworkPolicy",
    ),
    (
        "protocol-enum-is-case-sensitive",
        spec_with('ingress:\n- toPorts:\n  - ports:\n    - port: "80"\n      protocol: tcp  #!\n'),
        'Unsupported value: supported values: "TCP", "UDP", "SCTP", "ANY"',
        "spec.ingress[0].toPorts[0].ports[0].protocol",
        "tcp",
        "CiliumNetworkPolicy",
    ),
    (
        "protocol-extended-ip",
        spec_with('ingress:\n- toPorts:\n  - ports:\n    - port: "0"\n      protocol: VRRP  #!\n'),
        "protocol VRRP needs Cilium's extended IP protocols option",
        "spec.ingress[0].toPorts[0].ports[0].protocol",
        "VRRP",
        "CiliumNetworkPolicy",
    ),
    (
        "too-many-ports",
        spec_with("ingress:\n- toPorts:\n  - ports:  #!\n" + FORTY_ONE_PORTS + "\n"),
        "too many ports, the max is 40",
        "spec.ingress[0].toPorts[0].ports",
        41,
        "CiliumNetworkPolicy",
    ),
    (
        "too-many-ports-in-deny-rule",
        spec_with("ingressDeny:\n- toPorts:\n  - ports:  #!\n" + FORTY_ONE_PORTS + "\n"),
        "too many ports, the max is 40",
        "spec.ingressDeny[0].toPorts[0].ports",
        41,
        "CiliumNetworkPolicy",
    ),
    (
        "rules-in-deny-to-ports",
        spec_with(
            "ingressDeny:\n- toPorts:\n  - ports: [{port: '80', protocol: TCP}]\n"
            "    rules:  #!\n      http: [{method: GET}]\n"
        ),
        'unknown field "rules"',
        "spec.ingressDeny[0].toPorts[0].rules",
        {"http": [{"method": "GET"}]},
        "CiliumNetworkPolicy",
    ),
    (
        "server-name-empty",
        spec_with("egress:\n- toPorts:\n  - ports: [{port: '443', protocol: TCP}]\n    serverNames:\n    - ''  #!\n"),
        "empty server name is not allowed",
        "spec.egress[0].toPorts[0].serverNames[0]",
        "",
        "CiliumNetworkPolicy",
    ),
    # ---- ICMP ---------------------------------------------------------------------------
    (
        "icmps-with-to-ports",
        spec_with("ingress:\n- toPorts: [{ports: [{port: '80'}]}]\n  icmps:  #!\n  - fields: [{type: 8}]\n"),
        "the ICMPs block may only be present without ToPorts. Define a separate rule to use ToPorts",
        "spec.ingress[0].icmps",
        [{"fields": [{"type": 8}]}],
        "CiliumNetworkPolicy",
    ),
    (
        "icmp-wrong-family",
        spec_with("ingress:\n- icmps:\n  - fields:\n    - family: IPv5  #!\n      type: 8\n"),
        "wrong family: IPv5",
        "spec.ingress[0].icmps[0].fields[0].family",
        "IPv5",
        "CiliumNetworkPolicy",
    ),
    (
        "icmp-unknown-type-name",
        spec_with("ingress:\n- icmps:\n  - fields:\n    - type: Ping  #!\n"),
        "ICMP type Ping not found in IPv4",
        "spec.ingress[0].icmps[0].fields[0].type",
        "Ping",
        "CiliumNetworkPolicy",
    ),
    (
        "icmp-type-name-of-other-family",
        spec_with("ingress:\n- icmps:\n  - fields:\n    - family: IPv4\n      type: PacketTooBig  #!\n"),
        "ICMP type PacketTooBig not found in IPv4",
        "spec.ingress[0].icmps[0].fields[0].type",
        "PacketTooBig",
        "CiliumNetworkPolicy",
    ),
    (
        "icmp-type-out-of-range",
        spec_with("ingress:\n- icmps:\n  - fields:\n    - type: 256  #!\n"),
        "ICMP type must be a number within 0..255 or a type name",
        "spec.ingress[0].icmps[0].fields[0].type",
        256,
        "CiliumNetworkPolicy",
    ),
    (
        "icmp-type-missing",
        spec_with("ingress:\n- icmps:\n  - fields:\n    - family: IPv6  #!\n"),
        "Required value: ICMP type must be specified",
        "spec.ingress[0].icmps[0].fields[0].type",
        None,
        "CiliumNetworkPolicy",
    ),
    (
        "too-many-icmp-types",
        spec_with("ingress:\n- icmps:\n  - fields:  #!\n" + FORTY_ONE_TYPES + "\n"),
        "too many types, the max is 40",
        "spec.ingress[0].icmps[0].fields",
        41,
        "CiliumNetworkPolicy",
    ),
    # ---- selectors ----------------------------------------------------------------------
    (
        "selector-unknown-field",
        spec_with("ingress: [{}]\n", selector="endpointSelector:\n    matchLabel: {a: b}  #!"),
        'unknown field "matchLabel"',
        "spec.endpointSelector.matchLabel",
        {"a": "b"},
        "CiliumNetworkPolicy",
    ),
    (
        "selector-bad-label-key",
        spec_with("ingress:\n- fromEndpoints:\n  - matchLabels:\n      -app: web  #!\n"),
        "invalid label key: name part",
        "spec.ingress[0].fromEndpoints[0].matchLabels.-app",
        "-app",
        "CiliumNetworkPolicy",
    ),
    (
        "selector-bad-label-key-prefix",
        spec_with("ingress:\n- fromEndpoints:\n  - matchLabels:\n      Example.COM/app: web  #!\n"),
        "invalid label key prefix: must be a lowercase RFC 1123 subdomain",
        "spec.ingress[0].fromEndpoints[0].matchLabels.Example.COM/app",
        "Example.COM/app",
        "CiliumNetworkPolicy",
    ),
    (
        "selector-bad-label-value",
        spec_with("ingress:\n- fromEndpoints:\n  - matchLabels:\n      app: web server  #!\n"),
        "invalid label value",
        "spec.ingress[0].fromEndpoints[0].matchLabels.app",
        "web server",
        "CiliumNetworkPolicy",
    ),
    (
        "selector-label-value-too-long",
        spec_with("ingress:\n- fromEndpoints:\n  - matchLabels:\n      app: " + "a" * 64 + "  #!\n"),
        "invalid label value",
        "spec.ingress[0].fromEndpoints[0].matchLabels.app",
        "a" * 64,
        "CiliumNetworkPolicy",
    ),
    (
        "selector-label-value-not-a-string",
        spec_with("ingress:\n- fromEndpoints:\n  - matchLabels:\n      version: 2  #!\n"),
        "label value must be of type string",
        "spec.ingress[0].fromEndpoints[0].matchLabels.version",
        2,
        "CiliumNetworkPolicy",
    ),
    (
        "selector-operator-enum",
        spec_with(
            "ingress:\n- fromEndpoints:\n  - matchExpressions:\n    - key: app\n"
            "      operator: Equals  #!\n      values: [web]\n"
        ),
        "operator must be one of In, NotIn, Exists, DoesNotExist",
        "spec.ingress[0].fromEndpoints[0].matchExpressions[0].operator",
        "Equals",
        "CiliumNetworkPolicy",
    ),
    (
        "selector-in-without-values",
        spec_with("ingress:\n- fromEndpoints:\n  - matchExpressions:\n    - key: app  #!\n      operator: In\n"),
        "values must be a non-empty list for operator In",
        "spec.ingress[0].fromEndpoints[0].matchExpressions[0].values",
        None,
        "CiliumNetworkPolicy",
    ),
    (
        "selector-exists-with-values",
        spec_with(
            "ingress:\n- fromEndpoints:\n  - matchExpressions:\n    - key: app\n"
            "      operator: Exists\n      values: [web]  #!\n"
        ),
        "values must be empty for operator Exists",
        "spec.ingress[0].fromEndpoints[0].matchExpressions[0].values",
        ["web"],
        "CiliumNetworkPolicy",
    ),
    # ---- L7 context (the element-level checks; content checks belong to _l7) -------------
    (
        "dns-on-ingress",
        spec_with(
            "ingress:\n- toPorts:\n  - ports: [{port: '53', protocol: UDP}]\n    rules:\n"
            "      dns:  #!\n      - matchPattern: '*'\n"
        ),
        "L7 protocol DNS is not supported on ingress yet",
        "spec.ingress[0].toPorts[0].rules.dns",
        [{"matchPattern": "*"}],
        "CiliumNetworkPolicy",
    ),
    (
        "l7-needs-tcp",
        spec_with(
            "ingress:\n- toPorts:\n  - ports:\n    - port: '80'\n      protocol: UDP  #!\n"
            "    rules:\n      http: [{method: GET}]\n"
        ),
        "L7 rules can only apply to TCP (not UDP) except for DNS rules",
        "spec.ingress[0].toPorts[0].ports[0].protocol",
        "UDP",
        "CiliumNetworkPolicy",
    ),
    (
        "l7-any-protocol-is-not-tcp",
        spec_with("ingress:\n- toPorts:\n  - ports:\n    - port: '80'  #!\n    rules:\n      http: [{method: GET}]\n"),
        "L7 rules can only apply to TCP (not ANY) except for DNS rules",
        "spec.ingress[0].toPorts[0].ports[0].protocol",
        MISSING,
        "CiliumNetworkPolicy",
    ),
    (
        "l7-port-zero",
        spec_with(
            "ingress:\n- toPorts:\n  - ports:\n    - port: '0'  #!\n      protocol: TCP\n"
            "    rules:\n      http: [{method: GET}]\n"
        ),
        "L7 rules can not be used when a port is 0",
        "spec.ingress[0].toPorts[0].ports[0].port",
        "0",
        "CiliumNetworkPolicy",
    ),
    (
        "dns-without-ports",
        spec_with("egress:\n- toEndpoints: [{}]\n  toPorts:\n  - rules:\n      dns: [{matchPattern: '*'}]\n").replace(
            "  - rules:", "  - rules:  #!"
        ),
        "port 53 must be specified for DNS rules",
        "spec.egress[0].toPorts[0].ports",
        MISSING,
        "CiliumNetworkPolicy",
    ),
    (
        "dns-port-range",
        spec_with(
            "egress:\n- toPorts:\n  - ports:\n    - port: '53'\n      endPort: 54  #!\n"
            "    rules:\n      dns: [{matchPattern: '*'}]\n"
        ),
        "DNS rules do not support port ranges",
        "spec.egress[0].toPorts[0].ports[0].endPort",
        54,
        "CiliumNetworkPolicy",
    ),
    (
        "listener-on-ingress",
        spec_with(
            "ingress:\n- toPorts:\n  - ports: [{port: '80', protocol: TCP}]\n    listener:  #!\n"
            "      envoyConfig: {name: cec}\n      name: l1\n"
        ),
        "Listener is not allowed on ingress (l1)",
        "spec.ingress[0].toPorts[0].listener",
        {"envoyConfig": {"kind": "CiliumEnvoyConfig", "name": "cec"}, "name": "l1"},
        "CiliumNetworkPolicy",
    ),
    (
        "l7-on-host-ingress",
        "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: h}\n"
        "spec:\n  nodeSelector: {}\n  ingress:\n  - toPorts:\n"
        "    - ports: [{port: '80', protocol: TCP}]\n      rules:  #!\n"
        "        http: [{method: GET}]\n",
        "L7 policy is not supported on host ingress yet",
        "spec.ingress[0].toPorts[0].rules",
        {"http": [{"method": "GET"}]},
        "CiliumClusterwideNetworkPolicy",
    ),
    (
        "http-on-host-egress",
        "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: h}\n"
        "spec:\n  nodeSelector: {}\n  egress:\n  - toPorts:\n"
        "    - ports: [{port: '80', protocol: TCP}]\n      rules:  #!\n"
        "        http: [{method: GET}]\n",
        "L7 protocol HTTP is not supported on host egress yet",
        "spec.egress[0].toPorts[0].rules",
        {"http": [{"method": "GET"}]},
        "CiliumClusterwideNetworkPolicy",
    ),
    # ---- Kubernetes NetworkPolicy (API server validation) --------------------------------
    (
        "np-pod-selector-required",
        np_("ingress: [{}]  #!\n").replace("  ingress: [{}]  #!", "  ingress: [{}]").replace("spec:\n", "spec:  #!\n"),
        "Required value: podSelector",
        "spec.podSelector",
        None,
        "NetworkPolicy",
    ),
    (
        "np-empty-peer",
        np_("podSelector: {}\ningress:\n- from:\n  - {}  #!\n"),
        "Required value: must specify a peer",
        "spec.ingress[0].from[0]",
        {},
        "NetworkPolicy",
    ),
    (
        "np-ip-block-with-another-peer",
        np_("podSelector: {}\ningress:\n- from:\n  - ipBlock: {cidr: 10.0.0.0/8}  #!\n    podSelector: {}\n"),
        "Forbidden: may not specify both ipBlock and another peer",
        "spec.ingress[0].from[0]",
        {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}},
        "NetworkPolicy",
    ),
    (
        "np-ip-block-cidr",
        np_("podSelector: {}\negress:\n- to:\n  - ipBlock:\n      cidr: 10.0.0.1  #!\n"),
        "must be a valid CIDR value",
        "spec.egress[0].to[0].ipBlock.cidr",
        "10.0.0.1",
        "NetworkPolicy",
    ),
    (
        "np-except-not-strict-subset",
        np_("podSelector: {}\negress:\n- to:\n  - ipBlock:\n      cidr: 10.0.0.0/8\n      except: [10.0.0.0/8]  #!\n"),
        "must be a strict subset of `cidr`",
        "spec.egress[0].to[0].ipBlock.except[0]",
        "10.0.0.0/8",
        "NetworkPolicy",
    ),
    (
        "np-port-zero",
        np_("podSelector: {}\ningress:\n- ports:\n  - port: 0  #!\n"),
        "must be between 1 and 65535, inclusive",
        "spec.ingress[0].ports[0].port",
        0,
        "NetworkPolicy",
    ),
    (
        "np-port-number-as-string",
        np_("podSelector: {}\ningress:\n- ports:\n  - port: '80'  #!\n"),
        "must contain at least one letter (a-z)",
        "spec.ingress[0].ports[0].port",
        "80",
        "NetworkPolicy",
    ),
    (
        "np-end-port-with-named-port",
        np_("podSelector: {}\ningress:\n- ports:\n  - port: http\n    endPort: 90  #!\n"),
        "may not be specified when `port` is non-numeric",
        "spec.ingress[0].ports[0].endPort",
        90,
        "NetworkPolicy",
    ),
    (
        "np-end-port-below-port",
        np_("podSelector: {}\ningress:\n- ports:\n  - port: 90\n    endPort: 80  #!\n"),
        "must be greater than or equal to `port`",
        "spec.ingress[0].ports[0].endPort",
        80,
        "NetworkPolicy",
    ),
    (
        "np-end-port-without-port",
        np_("podSelector: {}\ningress:\n- ports:\n  - endPort: 80  #!\n"),
        "Required value: must be specified when `endPort` is specified",
        "spec.ingress[0].ports[0].port",
        None,
        "NetworkPolicy",
    ),
    (
        "np-protocol-enum",
        np_("podSelector: {}\ningress:\n- ports:\n  - protocol: ICMP  #!\n"),
        'Unsupported value: supported values: "SCTP", "TCP", "UDP"',
        "spec.ingress[0].ports[0].protocol",
        "ICMP",
        "NetworkPolicy",
    ),
    (
        "np-policy-types-enum",
        np_("podSelector: {}\npolicyTypes:\n- Ingress\n- ingress  #!\n"),
        'Unsupported value: supported values: "Ingress", "Egress"',
        "spec.policyTypes[1]",
        "ingress",
        "NetworkPolicy",
    ),
    (
        "np-selector-key-with-cilium-source",
        np_("podSelector:\n  matchLabels:\n    k8s:app: web  #!\n"),
        "invalid label key",
        "spec.podSelector.matchLabels.k8s:app",
        "k8s:app",
        "NetworkPolicy",
    ),
]


def _marked_line(text: str) -> int:
    lines = [i for i, line in enumerate(text.splitlines(), 1) if "#!" in line]
    assert len(lines) == 1, "each case marks exactly one line"
    return lines[0]


@pytest.mark.parametrize(
    ("text", "reason", "field", "value", "kind"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_rule_is_enforced_with_location(
    tmp_path: Path, text: str, reason: str, field: str | None, value: Any, kind: str | None
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_objects([path])
    err = info.value
    assert reason in err.reason
    assert err.field == field
    if value is not MISSING:
        assert err.has_value
        assert err.value == value
    assert err.document == str(path)
    assert err.line == _marked_line(text)
    assert err.kind == kind
    # The one-line message carries every piece of the location.
    assert str(err).startswith(f"{path}:{err.line}: ")
    if field:
        assert field in str(err)


def test_every_case_has_a_distinct_id() -> None:
    ids = [case[0] for case in CASES]
    assert len(ids) == len(set(ids))


def test_error_names_the_object_and_its_namespace(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(spec_with("ingress:\n- fromEntities: [internet]\n"))
    with pytest.raises(PolicyError) as info:
        load_objects([path])
    assert (info.value.kind, info.value.namespace, info.value.name) == (
        "CiliumNetworkPolicy",
        "prod",
        "p",
    )
    assert "CiliumNetworkPolicy prod/p: spec.ingress[0].fromEntities[0]" in str(info.value)


def test_policy_without_namespace_is_reported_in_default(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(spec_with("ingress:\n- fromEntities: [internet]\n").replace("  namespace: prod\n", ""))
    with pytest.raises(PolicyError) as info:
        load_objects([path])
    assert info.value.namespace == "default"


def test_second_document_error_points_into_the_second_document(tmp_path: Path) -> None:
    good = spec_with("ingress: [{}]\n")
    bad = spec_with("ingress:\n- fromEntities: [internet]  #!\n").replace("name: p", "name: q")
    path = tmp_path / "two.yaml"
    path.write_text(good + "---\n" + bad)
    with pytest.raises(PolicyError) as info:
        load_objects([path])
    assert info.value.name == "q"
    assert info.value.line == _marked_line(good + "---\n" + bad)


# ---- accepted forms that look like errors ---------------------------------------------------
ACCEPTED = [
    pytest.param(
        spec_with("ingress:\n- fromEndpoints: []\n  fromCIDR: [10.0.0.0/8]\n"), id="empty-list-beside-another-peer-kind"
    ),
    pytest.param(
        spec_with(
            "egress:\n- toServices: [{k8sService: {serviceName: db}}]\n"
            "  toPorts: [{ports: [{port: '5432', protocol: TCP}]}]\n"
        ),
        id="to-services-with-to-ports",
    ),
    pytest.param(spec_with("ingress:\n- toPorts: [{ports: [{port: HTTP-Alt}]}]\n"), id="named-port-case-insensitive"),
    pytest.param(
        spec_with("ingress:\n- toPorts: [{ports: [{port: '80', endPort: 70}]}]\n"),
        id="end-port-below-port-is-a-single-port",
    ),
    pytest.param(
        spec_with("ingress:\n- icmps: [{fields: [{family: IPv6, type: EchoRequest}, {type: '8'}]}]\n"),
        id="icmp-names-and-numeric-strings",
    ),
    pytest.param(
        spec_with(
            "ingress: [{}]\nenableDefaultDeny: {ingress: false}\nlog: {value: audit}\nlabels: [{key: team, value: a}]\n"
        ),
        id="rule-metadata",
    ),
    pytest.param(
        "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: h}\n"
        "spec:\n  nodeSelector: {}\n  egress:\n  - toPorts:\n"
        "    - ports: [{port: '53', protocol: UDP}]\n      rules: {dns: [{matchPattern: '*'}]}\n",
        id="dns-on-host-egress",
    ),
    pytest.param(CNP_HEAD.replace("spec:\n", "specs: []\n"), id="empty-specs"),
    pytest.param(
        spec_with("egress:\n- toCIDRSet:\n  - cidr: 10.0.0.0/24\n    except: [10.0.0.0/24, 10.0.0.128/25]\n"),
        id="except-as-wide-as-its-cidr",
    ),
    pytest.param(
        np_(
            "podSelector: {}\ningress:\n- from: []\n"
            "  ports: [{port: 8000, endPort: 8080}, {port: http, protocol: UDP}]\n"
        ),
        id="np-ranges-and-names",
    ),
]


@pytest.mark.parametrize("text", ACCEPTED)
def test_accepted(tmp_path: Path, text: str) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(text)
    assert len(load_objects([path])) == 1


def test_from_nodes_error_is_located_in_its_file(tmp_path: Path) -> None:
    path = tmp_path / "nodes.yaml"
    path.write_text(spec_with("ingress:\n- fromNodes:  #!\n  - matchLabels: {role: edge}\n"))
    with pytest.raises(PolicyError) as info:
        Cluster().apply(path)
    err = info.value
    assert (
        'FromNodes/ToNodes rules can only be applied when the "enable-node-selector-labels" flag is set' in err.reason
    )
    assert err.field == "spec.ingress[0].fromNodes"
    assert (err.kind, err.namespace, err.name) == ("CiliumNetworkPolicy", "prod", "p")


def test_cluster_level_rejections_name_file_and_line(tmp_path: Path) -> None:
    text = spec_with("ingress:\n- fromNodes:  #!\n  - matchLabels: {role: edge}\n")
    path = tmp_path / "nodes.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        Cluster().apply(path)
    assert info.value.document == str(path)
    assert info.value.line == _marked_line(text)
