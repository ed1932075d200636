// Package config owns the one description of a moha cluster: the YAML cluster file
// that names every node (broker, agent link and agent HTTP addresses), the load
// balancers in front of them and the settings every agent shares. It parses the file
// strictly (unknown keys are errors), fills in defaults, and validates the result,
// reporting every problem at once with the field it concerns. `moha render ...`, each
// `moha agent` and `moha up` all read (or, for `up`, write) this description.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/moha-project/moha/internal/linkdefault"
)

// Sentinel errors. Validation problems wrap ErrInvalid; Node wraps ErrUnknownNode.
var (
	ErrInvalid     = errors.New("config: invalid cluster description")
	ErrUnknownNode = errors.New("config: unknown node")
	ErrNoSecret    = errors.New("config: no cluster secret")
)

// Defaults that depend on a node (and so are applied per node by ApplyDefaults).
const (
	DefaultBrokerAddress = "127.0.0.1:1883"     // where the local mosquitto listens
	DefaultClusterPort   = 7946                 // agent link port, on the broker's host
	DefaultHTTPPort      = 9101                 // agent health/metrics port, on the broker's host
	DefaultTLSPort       = 8883                 // MQTT over TLS, on the brokers and the load balancers
	DefaultDataDir       = "/var/lib/mosquitto" // Debian's mosquitto persistence directory
	DefaultKeepAlive     = 30 * time.Second     // MQTT keepalive of the agent's sessions
	DefaultFirstPriority = 150                  // VRRP priority of the first load balancer host
	DefaultOtherPriority = 100                  // ... and of every host after it
	// MaxMessageSizeLimit leaves a message's topic, properties and framing room in a
	// link frame (64 MiB, internal/mesh).
	MaxMessageSizeLimit = 48 << 20
	// MinSecretLength is the shortest cluster secret, in bytes: the links' rule.
	MinSecretLength = linkdefault.MinSecretLength
)

// The values of quorum.
const (
	QuorumMajority = "majority"
	QuorumNone     = "none"
)

// EffectiveQuorum returns the quorum rule in force: the configured one, or
// the default for the number of nodes.
func (c *Cluster) EffectiveQuorum() string {
	switch {
	case c.Quorum != "":
		return c.Quorum
	case len(c.Nodes) <= 2:
		return QuorumNone
	}
	return QuorumMajority
}

// The values of data_subscription.
const (
	DataSubscriptionAll      = "all"
	DataSubscriptionInterest = "interest"
)

// The values of link_compression.
const (
	CompressionNone    = "none"
	CompressionDeflate = "deflate"
)

// The values of shared_subscriptions.
const (
	SharedSpread      = "spread"
	SharedPreferLocal = "prefer_local"
)

// Cluster is the whole cluster file.
type Cluster struct {
	Name       string    `yaml:"name"`                  // cluster name, shown in rendered files and logs
	Secret     string    `yaml:"secret,omitempty"`      // shared secret authenticating agent links (>= 16 bytes) ...
	SecretFile string    `yaml:"secret_file,omitempty"` // ... or a file holding it (exactly one of the two)
	LinkTLS    *TLSFiles `yaml:"link_tls,omitempty"`    // optional TLS for agent links: ca, and each node's own cert and key, naming that node (name or cluster address host)
	// StatusToken is the bearer token /status and /debug/pprof want from any address but
	// loopback (they show client ids, filters and broker log text). Unset: loopback only.
	StatusToken    string   `yaml:"status_token,omitempty"`
	Window         int      `yaml:"window"`          // messages in flight per peer link before the sender waits for acks
	BufferMessages int      `yaml:"buffer_messages"` // messages held for a peer whose link is down
	BufferBytes    ByteSize `yaml:"buffer_bytes"`    // bytes held for a peer whose link is down
	InterestGrace  Duration `yaml:"interest_grace"`  // how long a down peer's interest is kept
	// DataSubscription is what the agent's data session subscribes to on its broker:
	// "all" (every message, with a replay history closing the subscribe window) or
	// "interest" (only what peers advertise: less broker work when most messages stay
	// local, but a subscription made elsewhere misses what is published here until it is
	// known here, and a retained message on a topic nobody subscribes to takes ~2 s).
	DataSubscription string   `yaml:"data_subscription"`
	ReplayWindow     Duration `yaml:"replay_window"` // how long a message no peer got stays replayable (data_subscription all)
	ReplayBytes      ByteSize `yaml:"replay_bytes"`  // bytes the replay history holds at most; the oldest go first
	ReplayMargin     Duration `yaml:"replay_margin"` // replay what was published this long before a peer's subscription too (its log delay plus clock skew)
	// SharedSubscriptions is how a shared subscription group ($share/g/f) with members on
	// several nodes gets its messages: "spread" (round robin over the member nodes, as one
	// broker spreads over its members) or "prefer_local" (a message published on a node with
	// a member goes to a member there: less traffic between nodes, uneven load).
	SharedSubscriptions string `yaml:"shared_subscriptions"`
	// MessageSizeLimit is the largest payload a broker accepts (rendered as Mosquitto's
	// message_size_limit): what a broker accepts must cross the agents' links, so a client
	// gets its refusal from the broker (MQTT v5: reason 0x95) rather than losing it later.
	MessageSizeLimit ByteSize `yaml:"message_size_limit"`
	// MaxQueuedMessages bounds each client's queue in the broker (rendered as Mosquitto's
	// max_queued_messages; beyond it the broker drops, and the agent counts what it drops
	// for its own sessions). The agent's sessions need it deep: while clients subscribe in
	// bulk the broker reads the agent's acknowledgements one per loop turn, so a burst of a
	// million subscriptions queues nearly a million log lines. It bounds every client's
	// queue alike: a stuck subscriber may hold as many messages.
	MaxQueuedMessages int `yaml:"max_queued_messages"`
	// LinkCompression is how the agents send message batches to each other: "none", or
	// "deflate" (one DEFLATE stream per link, flushed after every batch, so a message is
	// compressed against the ones before it: fewer bytes between nodes for repetitive
	// payloads such as JSON telemetry, for more agent CPU; docs/BENCHMARKS.md measures the
	// trade). An agent decodes compressed batches whatever its own setting.
	LinkCompression string `yaml:"link_compression"`
	// Quorum is when a node takes clients (/readyz): "majority" — it reaches, with itself,
	// a strict majority of the nodes (a node cut off alone steps aside) — or "none" — its
	// broker sessions are up, whatever it reaches. Default: "majority" from three nodes,
	// "none" for two, where a majority of two is both and one dead node would leave
	// HAProxy no server at all.
	Quorum string `yaml:"quorum"`
	// SessionReplicas is how many other nodes keep a replica of each persistent session
	// (MQTT 3.1.1 clean session 0, MQTT v5 clean start 0): 0, 1 or 2. A client whose node
	// dies resumes its session, queued messages included, on the node the load balancer
	// sends it to next (docs/SESSIONS.md). Default 1; clean sessions cost nothing.
	SessionReplicas *int `yaml:"session_replicas,omitempty"`
	// SessionReplicaWindow is how long a replica keeps a message its client, online on
	// its home node, was sent there: what the client may not have received when the home
	// dies is delivered again from the replica (duplicates up to this long at a failover).
	SessionReplicaWindow Duration      `yaml:"session_replica_window"`
	Nodes                []Node        `yaml:"nodes"`          // the brokers, each with its agent
	LoadBalancers        LoadBalancers `yaml:"load_balancers"` // HAProxy + keepalived in front of the nodes
}

// NodeNames returns the nodes' names, in the file's order.
func (c *Cluster) NodeNames() []string {
	names := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		names[i] = n.Name
	}
	return names
}

// DefaultSessionReplicas is session_replicas when the file does not say.
const DefaultSessionReplicas = 1

// Replicas returns session_replicas, its default filled in.
func (c *Cluster) Replicas() int {
	if c.SessionReplicas == nil {
		return DefaultSessionReplicas
	}
	return *c.SessionReplicas
}

// Node is one broker and the agent beside it.
type Node struct {
	Name    string `yaml:"name"`     // unique, [a-zA-Z0-9_-]{1,64}
	Broker  Broker `yaml:"broker"`   // how the agent (and HAProxy) reach the broker
	Link    string `yaml:"cluster"`  // agent link address host:port (peers dial it); default <broker host>:7946
	HTTP    string `yaml:"http"`     // agent HTTP address host:port (/healthz, /readyz, /metrics); default <broker host>:9101
	DataDir string `yaml:"data_dir"` // absolute broker persistence directory for `render mosquitto`
	// ClientTLS, when set, adds an MQTT-over-TLS listener for clients to the rendered broker
	// config, and HAProxy passes TLS through to it (set it on every node or on none).
	ClientTLS *ClientTLS `yaml:"client_tls,omitempty"`
}

// ClientTLS is a broker listener for MQTT over TLS. The files are read by mosquitto on
// the node (relative paths are resolved against the cluster file's directory).
type ClientTLS struct {
	Port int    `yaml:"port"`         // on the broker's host; default 8883
	Cert string `yaml:"cert"`         // the broker's certificate chain (PEM) ...
	Key  string `yaml:"key"`          // ... and its private key
	CA   string `yaml:"ca,omitempty"` // set: clients must present a certificate from this CA
}

// Broker is how to reach one node's mosquitto.
type Broker struct {
	Address   string    `yaml:"address"`            // host:port, default 127.0.0.1:1883
	Username  string    `yaml:"username,omitempty"` // the agent's MQTT username, if the broker requires one
	Password  string    `yaml:"password,omitempty"` // ... and its password
	TLS       *TLSFiles `yaml:"tls,omitempty"`      // TLS to the broker: ca required, cert+key for client auth
	KeepAlive Duration  `yaml:"keepalive"`          // MQTT keepalive of the agent's sessions, whole seconds
}

// TLSFiles names PEM files for one TLS connection. Relative paths in a cluster file are
// resolved against the file's directory.
type TLSFiles struct {
	CA                 string `yaml:"ca"`                             // CA certificate(s) to verify the other side
	Cert               string `yaml:"cert,omitempty"`                 // our certificate ...
	Key                string `yaml:"key,omitempty"`                  // ... and its private key
	ServerName         string `yaml:"server_name,omitempty"`          // name to verify instead of the dialled host
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify,omitempty"` // testing only: skip verification
}

// LoadBalancers describes HAProxy and keepalived in front of the nodes.
type LoadBalancers struct {
	Port          int      `yaml:"port"`                  // client port on the load balancer
	TLSPort       int      `yaml:"tls_port"`              // MQTT over TLS on the load balancer, passed through (nodes with client_tls); default 8883
	FloatingIP    string   `yaml:"floating_ip,omitempty"` // CIDR, e.g. 10.0.0.100/24 (only keepalived needs it)
	Interface     string   `yaml:"interface"`             // VRRP interface
	RouterID      int      `yaml:"virtual_router_id"`     // VRRP virtual router id, 1..255
	Hosts         []LBHost `yaml:"hosts,omitempty"`       // the load balancer machines
	MaxConn       int      `yaml:"maxconn"`               // HAProxy client connection limit
	CheckInterval Duration `yaml:"check_interval"`        // HAProxy health check interval (whole ms)
	ClientTimeout Duration `yaml:"client_timeout"`        // HAProxy idle timeout: longer than any MQTT keepalive (whole ms)
}

// LBHost is one load balancer machine.
type LBHost struct {
	Name     string `yaml:"name"`     // unique, [a-zA-Z0-9_-]{1,64}
	Address  string `yaml:"address"`  // the machine's IP address or DNS name (no port)
	Priority int    `yaml:"priority"` // VRRP priority 1..254; default 150 for the first host, 100 after
}

// SubscribesAll reports whether the agents' data sessions subscribe to every
// message (data_subscription all, the default, also when unset).
func (c *Cluster) SubscribesAll() bool {
	return c.DataSubscription != DataSubscriptionInterest
}

// ClientTLSNodes returns how many nodes have a client TLS listener.
func (c *Cluster) ClientTLSNodes() int {
	n := 0
	for i := range c.Nodes {
		if c.Nodes[i].ClientTLS != nil {
			n++
		}
	}
	return n
}

// SpreadsShared reports whether shared subscription groups are spread over
// every member node (shared_subscriptions spread, the default, also when
// unset).
func (c *Cluster) SpreadsShared() bool {
	return c.SharedSubscriptions != SharedPreferLocal
}

// Default returns a cluster with every cluster-wide default filled in and no nodes.
// A zero (or absent) field in a cluster file means "use the default".
func Default() Cluster {
	return Cluster{
		Name:                 "moha",
		Window:               linkdefault.Window,
		BufferMessages:       linkdefault.BufferMessages,
		BufferBytes:          linkdefault.BufferBytes,
		InterestGrace:        Duration(linkdefault.InterestGrace),
		DataSubscription:     DataSubscriptionAll,
		ReplayWindow:         Duration(2 * time.Second),
		ReplayBytes:          64 << 20,
		ReplayMargin:         Duration(50 * time.Millisecond),
		SharedSubscriptions:  SharedSpread,
		MessageSizeLimit:     16 << 20,
		MaxQueuedMessages:    1000000,
		LinkCompression:      CompressionNone,
		SessionReplicaWindow: Duration(3 * time.Second),
		LoadBalancers: LoadBalancers{
			Port:          1883,
			TLSPort:       DefaultTLSPort,
			Interface:     "eth0",
			RouterID:      51,
			MaxConn:       10000,
			CheckInterval: Duration(time.Second),
			ClientTimeout: Duration(10 * time.Minute),
		},
	}
}

// ApplyDefaults fills every zero field with its default: the cluster-wide ones of
// Default, and per node the broker address, keepalive, data dir and the cluster and
// HTTP addresses (the broker's host with ports 7946 and 9101). Empty lists become nil.
// It is idempotent.
func (c *Cluster) ApplyDefaults() {
	d := Default()
	setIfZero(&c.Name, d.Name)
	setIfZero(&c.Window, d.Window)
	setIfZero(&c.BufferMessages, d.BufferMessages)
	setIfZero(&c.BufferBytes, d.BufferBytes)
	setIfZero(&c.InterestGrace, d.InterestGrace)
	setIfZero(&c.DataSubscription, d.DataSubscription)
	setIfZero(&c.ReplayWindow, d.ReplayWindow)
	setIfZero(&c.ReplayBytes, d.ReplayBytes)
	setIfZero(&c.ReplayMargin, d.ReplayMargin)
	setIfZero(&c.SharedSubscriptions, d.SharedSubscriptions)
	setIfZero(&c.MessageSizeLimit, d.MessageSizeLimit)
	setIfZero(&c.MaxQueuedMessages, d.MaxQueuedMessages)
	setIfZero(&c.LinkCompression, d.LinkCompression)
	setIfZero(&c.SessionReplicaWindow, d.SessionReplicaWindow)
	lb, dlb := &c.LoadBalancers, d.LoadBalancers
	setIfZero(&lb.Port, dlb.Port)
	setIfZero(&lb.TLSPort, dlb.TLSPort)
	setIfZero(&lb.Interface, dlb.Interface)
	setIfZero(&lb.RouterID, dlb.RouterID)
	setIfZero(&lb.MaxConn, dlb.MaxConn)
	setIfZero(&lb.CheckInterval, dlb.CheckInterval)
	setIfZero(&lb.ClientTimeout, dlb.ClientTimeout)
	for i := range lb.Hosts {
		setIfZero(&lb.Hosts[i].Priority, hostPriority(i))
	}
	for i := range c.Nodes {
		c.Nodes[i].applyDefaults()
	}
	if len(c.Nodes) == 0 {
		c.Nodes = nil
	}
	if len(lb.Hosts) == 0 {
		lb.Hosts = nil
	}
}

func hostPriority(i int) int {
	if i == 0 {
		return DefaultFirstPriority
	}
	return DefaultOtherPriority
}

func (n *Node) applyDefaults() {
	setIfZero(&n.Broker.Address, DefaultBrokerAddress)
	setIfZero(&n.Broker.KeepAlive, Duration(DefaultKeepAlive))
	setIfZero(&n.DataDir, DefaultDataDir)
	if n.ClientTLS != nil {
		setIfZero(&n.ClientTLS.Port, DefaultTLSPort)
	}
	// A broker address that does not parse gets no derived defaults; Validate reports it.
	if host, _, err := net.SplitHostPort(n.Broker.Address); err == nil && host != "" {
		setIfZero(&n.Link, net.JoinHostPort(host, strconv.Itoa(DefaultClusterPort)))
		setIfZero(&n.HTTP, net.JoinHostPort(host, strconv.Itoa(DefaultHTTPPort)))
	}
}

func setIfZero[T comparable](field *T, value T) {
	var zero T
	if *field == zero {
		*field = value
	}
}

// Node returns the node called name; the error lists the names the cluster knows.
func (c *Cluster) Node(name string) (*Node, error) {
	if c == nil {
		return nil, fmt.Errorf("%w %q: no cluster description", ErrUnknownNode, name)
	}
	names := make([]string, 0, len(c.Nodes))
	for i := range c.Nodes {
		if c.Nodes[i].Name == name {
			return &c.Nodes[i], nil
		}
		names = append(names, c.Nodes[i].Name)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%w %q: the cluster has no nodes", ErrUnknownNode, name)
	}
	return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknownNode, name, strings.Join(names, ", "))
}

// SecretBytes returns the cluster secret, reading secret_file if that is how it is given.
// Surrounding whitespace in the file (a trailing newline, typically) is not part of it.
func (c *Cluster) SecretBytes() ([]byte, error) {
	if c == nil {
		return nil, ErrNoSecret
	}
	if c.Secret != "" {
		return []byte(c.Secret), nil
	}
	if c.SecretFile == "" {
		return nil, ErrNoSecret
	}
	secret, err := readSecretFile(c.SecretFile)
	if err != nil {
		return nil, err
	}
	if len(secret) < MinSecretLength {
		return nil, fmt.Errorf("%w: secret_file %s holds %d bytes, need at least %d",
			ErrNoSecret, c.SecretFile, len(secret), MinSecretLength)
	}
	return secret, nil
}

// readSecretFile reads a secret file without surrounding whitespace.
func readSecretFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read secret_file: %w", err)
	}
	return bytes.TrimSpace(data), nil
}

// Marshal writes c as a cluster file. It contains the secret if one is set inline:
// write it with mode 0600.
func (c *Cluster) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("marshal cluster: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("marshal cluster: %w", err)
	}
	return buf.Bytes(), nil
}

// SplitHostPort splits "host:port" (IPv6 hosts in brackets) and checks the port is a
// number in 1..65535. The host may be empty; Validate refuses that for node addresses.
func SplitHostPort(addr string) (host string, port int, err error) {
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port", addr)
	}
	if portText == "" || strings.Trim(portText, "0123456789") != "" {
		return "", 0, fmt.Errorf("%q: port %q is not a number", addr, portText)
	}
	port, err = strconv.Atoi(portText)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("%q: port %s is not in 1..65535", addr, portText)
	}
	return host, port, nil
}
