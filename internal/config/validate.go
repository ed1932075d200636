package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// minQueuedMessages is the least max_queued_messages accepted: Mosquitto's own
// default (1000) would drop the agent's log lines and messages at once.
const minQueuedMessages = 10000

// FieldError is one validation problem, naming the field it concerns
// (`nodes[1].broker.address`). It matches ErrInvalid with errors.Is.
type FieldError struct {
	Field   string
	Problem string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }

// Is makes every FieldError match ErrInvalid.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

// problems collects FieldErrors in the order found.
type problems []error

func (p *problems) add(field, format string, args ...any) {
	*p = append(*p, &FieldError{Field: field, Problem: fmt.Sprintf(format, args...)})
}

var (
	namePattern     = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)
	hostnamePattern = regexp.MustCompile(`^([a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9_])?)(\.[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9_])?)*$`)
	ifacePattern    = regexp.MustCompile(`^[a-zA-Z0-9_.@-]{1,15}$`)
)

// Validate fills in defaults (ApplyDefaults: a cluster that validated is complete, however
// it was built) and checks the result, returning errors.Join of one *FieldError per
// problem, or nil. It reads the secret and TLS files to check they are readable. It never
// panics.
func (c *Cluster) Validate() error {
	if c == nil {
		return &FieldError{Field: "cluster", Problem: "no cluster description"}
	}
	c.ApplyDefaults()
	var p problems
	checkName(&p, "name", c.Name)
	c.checkSecret(&p)
	if c.StatusToken != "" {
		if len(c.StatusToken) < MinSecretLength {
			p.add("status_token", "is %d bytes long, need at least %d", len(c.StatusToken), MinSecretLength)
		}
		checkText(&p, "status_token", c.StatusToken)
	}
	checkTLS(&p, "link_tls", c.LinkTLS, true)
	checkPositive(&p, "window", int64(c.Window))
	checkPositive(&p, "buffer_messages", int64(c.BufferMessages))
	checkPositive(&p, "buffer_bytes", int64(c.BufferBytes))
	checkPositive(&p, "interest_grace", int64(c.InterestGrace))
	if c.DataSubscription != DataSubscriptionAll && c.DataSubscription != DataSubscriptionInterest {
		p.add("data_subscription", "is %q, want %q or %q", c.DataSubscription, DataSubscriptionAll, DataSubscriptionInterest)
	}
	if c.LinkCompression != CompressionNone && c.LinkCompression != CompressionDeflate {
		p.add("link_compression", "is %q, want %q or %q", c.LinkCompression, CompressionNone, CompressionDeflate)
	}
	if c.SharedSubscriptions != SharedSpread && c.SharedSubscriptions != SharedPreferLocal {
		p.add("shared_subscriptions", "is %q, want %q or %q", c.SharedSubscriptions, SharedSpread, SharedPreferLocal)
	}
	checkPositive(&p, "replay_window", int64(c.ReplayWindow))
	if n := c.Replicas(); n < 0 || n > 2 {
		p.add("session_replicas", "is %d, want 0, 1 or 2", n)
	}
	checkPositive(&p, "session_replica_window", int64(c.SessionReplicaWindow))
	checkPositive(&p, "replay_bytes", int64(c.ReplayBytes))
	checkPositive(&p, "replay_margin", int64(c.ReplayMargin))
	checkPositive(&p, "message_size_limit", int64(c.MessageSizeLimit))
	if c.MaxQueuedMessages < minQueuedMessages {
		p.add("max_queued_messages", "is %d, at least %d: the agent's sessions queue in the broker too", c.MaxQueuedMessages, minQueuedMessages)
	}
	if c.Quorum != "" && c.Quorum != QuorumMajority && c.Quorum != QuorumNone {
		p.add("quorum", "is %q, want %q or %q (or nothing: %q from three nodes, %q for two)", c.Quorum, QuorumMajority, QuorumNone, QuorumMajority, QuorumNone)
	}
	if c.MessageSizeLimit > MaxMessageSizeLimit {
		p.add("message_size_limit", "is %v, at most %v: a message must fit an agent link's frame", c.MessageSizeLimit, ByteSize(MaxMessageSizeLimit))
	}
	c.checkNodes(&p)
	c.LoadBalancers.check(&p)
	return errors.Join(p...)
}

func (c *Cluster) checkSecret(p *problems) {
	switch {
	case c.Secret != "" && c.SecretFile != "":
		p.add("secret", "set either secret or secret_file, not both")
	case c.Secret != "":
		if len(c.Secret) < MinSecretLength {
			p.add("secret", "is %d bytes long, need at least %d", len(c.Secret), MinSecretLength)
		}
		checkText(p, "secret", c.Secret)
	case c.SecretFile != "":
		if !checkReadable(p, "secret_file", c.SecretFile) {
			return
		}
		secret, err := readSecretFile(c.SecretFile)
		if err != nil {
			p.add("secret_file", "%v", err)
		} else if len(secret) < MinSecretLength {
			p.add("secret_file", "%s holds %d bytes of secret, need at least %d", c.SecretFile, len(secret), MinSecretLength)
		}
	default:
		p.add("secret", "required (or secret_file): at least %d bytes shared by every agent", MinSecretLength)
	}
}

func (c *Cluster) checkNodes(p *problems) {
	if len(c.Nodes) == 0 {
		p.add("nodes", "at least one node is required")
		return
	}
	names := map[string]int{}
	for i := range c.Nodes {
		n := &c.Nodes[i]
		field := fmt.Sprintf("nodes[%d]", i)
		checkName(p, field+".name", n.Name)
		if j, dup := names[n.Name]; dup && n.Name != "" {
			p.add(field+".name", "%q is already the name of nodes[%d]", n.Name, j)
		} else {
			names[n.Name] = i
		}
		n.check(p, field)
	}
	switch withTLS := c.ClientTLSNodes(); {
	case withTLS > 0 && withTLS < len(c.Nodes):
		p.add("nodes[].client_tls", "set on %d of %d nodes: HAProxy passes TLS to every node, so set it on every node or on none", withTLS, len(c.Nodes))
	case withTLS > 0 && c.LoadBalancers.TLSPort == c.LoadBalancers.Port:
		p.add("load_balancers.tls_port", "is %d, the same as load_balancers.port", c.LoadBalancers.TLSPort)
	}
	c.checkCollisions(p)
}

func (n *Node) check(p *problems, field string) {
	b := &n.Broker
	checkEndpoint(p, field+".broker.address", b.Address)
	for _, a := range []struct{ name, value string }{{"cluster", n.Link}, {"http", n.HTTP}} {
		if a.value == "" {
			p.add(field+"."+a.name, "required: cannot default to the broker's host while broker.address is invalid")
			continue
		}
		checkEndpoint(p, field+"."+a.name, a.value)
	}
	checkText(p, field+".broker.username", b.Username)
	checkText(p, field+".broker.password", b.Password)
	if b.Password != "" && b.Username == "" {
		p.add(field+".broker.password", "is set without broker.username")
	}
	checkTLS(p, field+".broker.tls", b.TLS, false)
	checkClientTLS(p, field+".client_tls", n.ClientTLS)
	checkPositive(p, field+".broker.keepalive", int64(b.KeepAlive))
	if k := b.KeepAlive.Std(); k > 0 && (k%time.Second != 0 || k > 65535*time.Second) {
		p.add(field+".broker.keepalive", "%s: MQTT keepalive is whole seconds, at most 65535s", k)
	}
	checkText(p, field+".data_dir", n.DataDir)
	if !filepath.IsAbs(n.DataDir) {
		p.add(field+".data_dir", "%q is not an absolute path", n.DataDir)
	}
}

// checkCollisions refuses two listeners on the same host and port: different nodes on
// one machine (typical for tests and `moha up`) need their own ports, and the derived
// defaults (ports 7946 and 9101 on the broker's host) cannot give them that.
func (c *Cluster) checkCollisions(p *problems) {
	owner := map[string]string{}
	for i := range c.Nodes {
		n := &c.Nodes[i]
		for _, a := range []struct{ name, value string }{
			{"broker.address", n.Broker.Address}, {"cluster", n.Link}, {"http", n.HTTP},
		} {
			key, ok := endpointKey(a.value)
			if !ok {
				continue // already reported
			}
			field := fmt.Sprintf("nodes[%d].%s", i, a.name)
			if other, taken := owner[key]; taken {
				p.add(field, "%s is also %s: nodes that share a host need distinct ports "+
					"(set cluster and http explicitly for each node)", a.value, other)
				continue
			}
			owner[key] = field
		}
	}
}

// endpointKey is a canonical "host:port" for comparing addresses (IPs normalised,
// names lower-cased).
func endpointKey(addr string) (string, bool) {
	host, port, err := SplitHostPort(addr)
	if err != nil || host == "" {
		return "", false
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.Unmap().String()
	}
	return strings.ToLower(host) + ":" + strconv.Itoa(port), true
}

func (lb *LoadBalancers) check(p *problems) {
	const field = "load_balancers"
	if lb.Port < 1 || lb.Port > 65535 {
		p.add(field+".port", "%d is not a port in 1..65535", lb.Port)
	}
	if lb.FloatingIP != "" {
		if prefix, err := netip.ParsePrefix(lb.FloatingIP); err != nil || prefix.Addr().Zone() != "" {
			p.add(field+".floating_ip", "%q is not an address with a prefix length, like 10.0.0.100/24", lb.FloatingIP)
		}
	}
	if !ifacePattern.MatchString(lb.Interface) {
		p.add(field+".interface", "%q is not a network interface name", lb.Interface)
	}
	if lb.RouterID < 1 || lb.RouterID > 255 {
		p.add(field+".virtual_router_id", "%d is not in 1..255", lb.RouterID)
	}
	checkPositive(p, field+".maxconn", int64(lb.MaxConn))
	checkMilliseconds(p, field+".check_interval", lb.CheckInterval)
	checkMilliseconds(p, field+".client_timeout", lb.ClientTimeout)
	names := map[string]int{}
	for i, h := range lb.Hosts {
		hf := fmt.Sprintf("%s.hosts[%d]", field, i)
		checkName(p, hf+".name", h.Name)
		if j, dup := names[h.Name]; dup && h.Name != "" {
			p.add(hf+".name", "%q is already the name of %s.hosts[%d]", h.Name, field, j)
		} else {
			names[h.Name] = i
		}
		if err := checkHost(h.Address); err != nil {
			p.add(hf+".address", "%v (a host's address, without a port)", err)
		}
		if h.Priority < 1 || h.Priority > 254 {
			p.add(hf+".priority", "%d is not in 1..254", h.Priority)
		}
	}
}

// checkEndpoint checks a node address: host:port that other machines can dial.
func checkEndpoint(p *problems, field, addr string) {
	host, _, err := SplitHostPort(addr)
	if err != nil {
		p.add(field, "%v", err)
		return
	}
	if err := checkHost(host); err != nil {
		p.add(field, "%q: %v", addr, err)
	}
}

// checkHost accepts an IP address or a DNS name that others can connect to.
func checkHost(host string) error {
	if host == "" {
		return errors.New("host is empty")
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.IsUnspecified() {
			return fmt.Errorf("%s listens everywhere but cannot be dialled: give this machine's address", host)
		}
		return nil
	}
	if len(host) > 253 || !hostnamePattern.MatchString(host) {
		return fmt.Errorf("%q is neither an IP address nor a host name", host)
	}
	return nil
}

func checkName(p *problems, field, name string) {
	if !namePattern.MatchString(name) {
		p.add(field, "%q must be 1 to 64 of a-z, A-Z, 0-9, '_' and '-'", name)
	}
}

func checkPositive(p *problems, field string, v int64) {
	if v <= 0 {
		p.add(field, "must be positive")
	}
}

func checkMilliseconds(p *problems, field string, d Duration) {
	switch {
	case d <= 0:
		p.add(field, "must be positive")
	case d.Std()%time.Millisecond != 0:
		p.add(field, "%s is not a whole number of milliseconds", d)
	}
}

// checkText refuses control characters: these strings end up in rendered config files
// and on command lines, where a newline would start a directive of its own.
func checkText(p *problems, field, s string) {
	if strings.IndexFunc(s, unicode.IsControl) >= 0 {
		p.add(field, "contains a control character")
	}
}

// checkTLS checks a TLS block: CA required; cert and key required together (always, for
// agent links, where both sides authenticate), every named file readable.
// checkClientTLS checks a broker TLS listener. Its files are mosquitto's to
// read on the node (not necessarily where this runs): only their names are
// checked.
func checkClientTLS(p *problems, field string, t *ClientTLS) {
	if t == nil {
		return
	}
	if t.Port < 1 || t.Port > 65535 {
		p.add(field+".port", "is %d, want 1..65535", t.Port)
	}
	for _, f := range []struct {
		name, path string
		required   bool
	}{{"cert", t.Cert, true}, {"key", t.Key, true}, {"ca", t.CA, false}} {
		switch {
		case f.path == "" && f.required:
			p.add(field+"."+f.name, "required when %s is set", field)
		case f.path != "" && !filepath.IsAbs(f.path):
			p.add(field+"."+f.name, "%q is not an absolute path", f.path)
		case f.path != "":
			checkText(p, field+"."+f.name, f.path)
		}
	}
}

func checkTLS(p *problems, field string, t *TLSFiles, needCert bool) {
	if t == nil {
		return
	}
	if t.CA == "" {
		p.add(field+".ca", "required when %s is set", field)
	}
	switch {
	case needCert && t.Cert == "":
		p.add(field+".cert", "required when %s is set", field)
	case t.Key != "" && t.Cert == "":
		p.add(field+".cert", "required when key is set")
	}
	switch {
	case needCert && t.Key == "":
		p.add(field+".key", "required when %s is set", field)
	case t.Cert != "" && t.Key == "":
		p.add(field+".key", "required when cert is set")
	}
	for _, f := range []struct{ name, path string }{{"ca", t.CA}, {"cert", t.Cert}, {"key", t.Key}} {
		if f.path != "" {
			checkReadable(p, field+"."+f.name, f.path)
		}
	}
	checkText(p, field+".server_name", t.ServerName)
}

// checkReadable reports whether path is a regular file this process can open. It looks
// before opening: opening a FIFO would block until someone writes to it.
func checkReadable(p *problems, field, path string) bool {
	if strings.IndexFunc(path, unicode.IsControl) >= 0 {
		p.add(field, "contains a control character")
		return false
	}
	info, err := os.Stat(path)
	if err != nil {
		p.add(field, "cannot be read: %v", err)
		return false
	}
	if !info.Mode().IsRegular() {
		p.add(field, "%s is not a regular file", path)
		return false
	}
	f, err := os.Open(path)
	if err != nil {
		p.add(field, "cannot be read: %v", err)
		return false
	}
	f.Close()
	return true
}
