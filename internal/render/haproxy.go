package render

import (
	"fmt"
	"slices"

	"github.com/moha-project/moha/internal/config"
	"github.com/moha-project/moha/internal/placement"
)

// HAProxyOptions adjusts the rendered HAProxy config.
type HAProxyOptions struct {
	// Bind replaces the client listener "*:<load_balancers.port>", e.g. "127.0.0.1:1883".
	Bind string
	// TLSBind replaces the TLS listener "*:<load_balancers.tls_port>" (rendered when the
	// nodes have client_tls).
	TLSBind string
	// StatsBind, when set, adds an HTTP listener there with the stats page on /stats and
	// Prometheus metrics on /metrics.
	StatsBind string
}

// HAProxy renders a TCP-mode HAProxy 2.6 config for the cluster's load balancers
// (see HAPROXY.md): only a valid MQTT CONNECT gets through, its client id's bucket picks
// the node (internal/placement), and a node counts as up while its agent's /readyz answers
// 200. It has no log or daemon settings: run it with `haproxy -D -p <pidfile> -f <file>`
// (or `-Ws` under systemd).
func HAProxy(c *config.Cluster, opt HAProxyOptions) (string, error) {
	if err := validCluster(c); err != nil {
		return "", err
	}
	lb := &c.LoadBalancers
	bind := fmt.Sprintf("*:%d", lb.Port)
	if opt.Bind != "" {
		bind = opt.Bind
	}
	if err := checkBind("bind", bind); err != nil {
		return "", err
	}
	if opt.StatsBind != "" {
		if err := checkBind("stats bind", opt.StatsBind); err != nil {
			return "", err
		}
	}
	inter, err := haproxyTime("load_balancers.check_interval", lb.CheckInterval.Std())
	if err != nil {
		return "", err
	}
	idle, err := haproxyTime("load_balancers.client_timeout", lb.ClientTimeout.Std())
	if err != nil {
		return "", err
	}
	servers, err := serverLines(c, inter, nil)
	if err != nil {
		return "", err
	}
	tlsBind := fmt.Sprintf("*:%d", lb.TLSPort)
	if opt.TLSBind != "" {
		tlsBind = opt.TLSBind
	}
	var tlsServers []string
	if c.ClientTLSNodes() > 0 {
		if err := checkBind("tls bind", tlsBind); err != nil {
			return "", err
		}
		tlsServers, err = serverLines(c, inter, func(n *config.Node) int { return n.ClientTLS.Port })
		if err != nil {
			return "", err
		}
	}

	var w writer
	w.header(fmt.Sprintf("cluster %q (moha render haproxy)", c.Name))
	writeGlobal(&w, lb.MaxConn, idle)
	writeFrontend(&w, bind, lb.MaxConn)
	writeBucketBackend(&w, servers, bucketRules(c))
	if tlsServers != nil {
		writeTLS(&w, tlsBind, lb.MaxConn, tlsServers)
	}
	if opt.StatsBind != "" {
		writeStats(&w, opt.StatsBind)
	}
	return w.String(), nil
}

// checkBind accepts "[host]:port" where host may be empty or "*" (every address).
func checkBind(name, bind string) error {
	if err := checkOptionText(name, bind); err != nil {
		return err
	}
	if _, _, err := config.SplitHostPort(bind); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrOption, name, err)
	}
	return nil
}

// serverLines gives one backend server line per node: traffic to the broker address
// (with tlsPort, to that port of its host instead), health checks to the agent's HTTP
// address.
func serverLines(c *config.Cluster, inter string, tlsPort func(*config.Node) int) ([]string, error) {
	lines := make([]string, 0, len(c.Nodes))
	for i := range c.Nodes {
		n := &c.Nodes[i]
		host, port, err := splitAddr(fmt.Sprintf("node %s broker.address", n.Name), n.Broker.Address)
		if err != nil {
			return nil, err
		}
		if tlsPort != nil {
			port = tlsPort(n)
		}
		checkHost, checkPort, err := splitAddr(fmt.Sprintf("node %s http", n.Name), n.HTTP)
		if err != nil {
			return nil, err
		}
		lines = append(lines, fmt.Sprintf("server %s %s check port %d addr %s inter %s fall 2 rise 2",
			n.Name, joinHostPort(host, port), checkPort, bracketIPv6(checkHost), inter))
	}
	return lines, nil
}

func writeGlobal(w *writer, maxConn int, idle string) {
	w.line("global")
	w.line("    maxconn %d", maxConn)
	w.blank()
	w.line("defaults")
	w.line("    mode tcp")
	w.line("    timeout connect 5s")
	w.sectionComment("Idle limit for an MQTT connection: longer than any client's keepalive.")
	w.line("    timeout client %s", idle)
	w.line("    timeout server %s", idle)
	w.blank()
}

func writeFrontend(w *writer, bind string, maxConn int) {
	w.comment("MQTT clients. Only a valid MQTT CONNECT gets through; its client id picks the node.")
	w.line("frontend mqtt")
	w.line("    bind %s", bind)
	w.line("    maxconn %d", maxConn)
	w.line("    tcp-request inspect-delay 5s")
	w.line("    tcp-request content reject unless { req.payload(0,0),mqtt_is_valid }")
	w.line("    tcp-request content set-var(sess.cid) req.payload(0,0),mqtt_field_value(connect,client_identifier)")
	w.line("    tcp-request content set-var(sess.bucket) var(sess.cid),crc32,mod(%d)", placement.Buckets)
	w.line("    default_backend brokers")
	w.blank()
}

func writeBucketBackend(w *writer, servers, rules []string) {
	w.comment(
		"The client id's bucket (crc32 mod buckets) picks the node: each bucket lists the nodes",
		"in a fixed order and the first one up gets the client, so a client returns to the node",
		"holding its session while that node is up, and when it is down goes to the next one,",
		"which the agents compute too (internal/placement, docs/SESSIONS.md). A node is up while",
		"its agent's /readyz answers 200: the agent knows whether its broker is reachable and",
		"whether its side of the cluster has a majority. Host names here are resolved once,",
		"when HAProxy starts.",
	)
	writeBackend(w, "brokers", "hash var(sess.cid)", slices.Concat(rules, servers))
}

// writeBackend renders a backend of the brokers: balanced by balance over
// consistent hashing, a server up while its agent's /readyz answers 200,
// then lines (server rules and servers).
func writeBackend(w *writer, name, balance string, lines []string) {
	w.line("backend %s", name)
	w.line("    balance %s", balance)
	w.line("    hash-type consistent")
	w.line("    option httpchk")
	w.line("    http-check send meth GET uri /readyz")
	w.line("    http-check expect status 200")
	for _, l := range lines {
		w.line("    %s", l)
	}
}

// bucketRules lists, per bucket, its nodes in placement order: HAProxy
// skips a rule whose server is down and takes the next.
func bucketRules(c *config.Cluster) []string {
	names := c.NodeNames()
	rules := make([]string, 0, placement.Buckets*len(names))
	for b := range placement.Buckets {
		for _, n := range placement.Order(b, names) {
			rules = append(rules, fmt.Sprintf("use-server %s if { var(sess.bucket) -m int %d }", n, b))
		}
	}
	return rules
}

// writeTLS renders MQTT over TLS, passed through to the brokers' TLS listeners:
// HAProxy cannot read the client id inside TLS, so it balances on the client's address
// (consistent hashing: a client comes back to the same node while that node is up).
func writeTLS(w *writer, bind string, maxConn int, servers []string) {
	w.blank()
	w.comment(
		"MQTT over TLS, passed through to each broker's TLS listener (nodes[].client_tls).",
		"The client id is encrypted, so the client's address picks the node.",
	)
	w.line("frontend mqtts")
	w.line("    bind %s", bind)
	w.line("    maxconn %d", maxConn)
	w.line("    default_backend brokers_tls")
	w.blank()
	writeBackend(w, "brokers_tls", "source", servers)
}

func writeStats(w *writer, bind string) {
	w.blank()
	w.comment("HAProxy's own stats page (/stats) and Prometheus metrics (/metrics).")
	w.line("frontend stats")
	w.line("    mode http")
	w.line("    bind %s", bind)
	w.line("    timeout client 30s")
	w.line("    stats enable")
	w.line("    stats uri /stats")
	w.line("    stats refresh 10s")
	w.line("    http-request use-service prometheus-exporter if { path /metrics }")
}
