package config

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
)

// ScaffoldOptions describe a cluster by its hosts, for Scaffold.
type ScaffoldOptions struct {
	Name       string   // cluster name; default "moha"
	Nodes      []string // broker hosts (IP or DNS name), each optionally with :port (default 1883)
	LBs        []string // load balancer hosts (none: HAProxy without keepalived, rendered by hand)
	FloatingIP string   // CIDR the load balancers share (required with LBs)
	Interface  string   // the load balancers' VRRP interface; default eth0
	SecretFile string   // where the secret is (relative to the cluster file's directory)
}

// ErrScaffold reports options Scaffold cannot make a cluster file from.
var ErrScaffold = errors.New("config: cannot write a cluster file")

// Scaffold returns a commented cluster file for the given hosts: node i is
// "node<i>" with its broker on host:1883, its agent's link on host:7946 and
// its HTTP on host:9101; load balancer i is "lb<i>", the first preferred.
// The caller writes the secret file. The result parses and validates once
// the secret file exists.
func Scaffold(o ScaffoldOptions) (string, error) {
	if len(o.Nodes) == 0 {
		return "", fmt.Errorf("%w: no nodes: give the broker hosts", ErrScaffold)
	}
	if len(o.LBs) > 0 && o.FloatingIP == "" {
		return "", fmt.Errorf("%w: load balancer hosts need the floating IP they share (CIDR, e.g. 10.0.0.100/24)", ErrScaffold)
	}
	if o.SecretFile == "" {
		return "", fmt.Errorf("%w: no secret file", ErrScaffold)
	}
	name, iface := cmp.Or(o.Name, "moha"), cmp.Or(o.Interface, Default().LoadBalancers.Interface)
	var b strings.Builder
	b.WriteString("# moha cluster file, written by `moha init`. Every field: docs/CONFIG.md.\n")
	b.WriteString("# Install it on every node and load balancer host, then render what each one\n")
	b.WriteString("# runs: `moha render --help`.\n")
	fmt.Fprintf(&b, "name: %s\n\n", yamlString(name))
	b.WriteString("# Authenticates the agents' links and derives their client ids: keep the file\n")
	b.WriteString("# private (mode 0600) and the same on every node.\n")
	fmt.Fprintf(&b, "secret_file: %s\n\n", yamlString(o.SecretFile))
	b.WriteString("# For production (docs/SECURITY.md): broker credentials for each agent\n")
	b.WriteString("# (nodes[].broker.username/password: authentication and an ACL are rendered),\n")
	b.WriteString("# link_tls on networks you do not control, and status_token to read /status\n")
	b.WriteString("# from other hosts.\n\n")
	b.WriteString("# One broker per node, with its agent beside it. The agent's link address\n")
	b.WriteString("# (cluster) is what the other agents dial; its HTTP address is where the load\n")
	b.WriteString("# balancers check /readyz (and Prometheus reads /metrics).\n")
	b.WriteString("nodes:\n")
	seen := map[string]bool{}
	for i, n := range o.Nodes {
		host, port, err := hostPort(n, 1883)
		if err != nil {
			return "", fmt.Errorf("%w: node %q: %w", ErrScaffold, n, err)
		}
		if seen[net.JoinHostPort(host, port)] {
			return "", fmt.Errorf("%w: node %q is listed twice", ErrScaffold, n)
		}
		seen[net.JoinHostPort(host, port)] = true
		fmt.Fprintf(&b, "  - name: node%d\n", i+1)
		fmt.Fprintf(&b, "    broker:\n      address: %s\n", yamlString(net.JoinHostPort(host, port)))
		fmt.Fprintf(&b, "    cluster: %s\n", yamlString(net.JoinHostPort(host, strconv.Itoa(DefaultClusterPort))))
		fmt.Fprintf(&b, "    http: %s\n", yamlString(net.JoinHostPort(host, strconv.Itoa(DefaultHTTPPort))))
	}
	b.WriteString("\n# HAProxy in front of the nodes")
	if len(o.LBs) == 0 {
		b.WriteString(" (no load balancer hosts given: add them, with floating_ip\n# and interface, to render keepalived).\nload_balancers:\n  port: 1883\n")
		return b.String(), nil
	}
	b.WriteString(", on hosts that share a floating IP (keepalived,\n# VRRP on the interface below). Clients connect to the floating IP.\n")
	fmt.Fprintf(&b, "load_balancers:\n  port: 1883\n  floating_ip: %s\n  interface: %s\n  hosts:\n", yamlString(o.FloatingIP), yamlString(iface))
	for i, lb := range o.LBs {
		if slices.Contains(o.LBs[:i], lb) {
			return "", fmt.Errorf("%w: load balancer %q is listed twice", ErrScaffold, lb)
		}
		priority := 100
		if i == 0 {
			priority = 150
		}
		fmt.Fprintf(&b, "    - {name: lb%d, address: %s, priority: %d}\n", i+1, yamlString(lb), priority)
	}
	return b.String(), nil
}

// hostPort splits "host" or "host:port" (IPv6 in brackets when a port is given).
func hostPort(s string, defaultPort int) (host, port string, err error) {
	if h, p, err := net.SplitHostPort(s); err == nil {
		return h, p, nil
	}
	if strings.ContainsAny(s, " /") || s == "" {
		return "", "", errors.New("not a host name or address")
	}
	return strings.Trim(s, "[]"), strconv.Itoa(defaultPort), nil
}

// yamlString quotes s for YAML (JSON strings are YAML strings).
func yamlString(s string) string {
	return strconv.Quote(s)
}
