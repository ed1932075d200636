package mesh

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moha-project/moha/internal/linkdefault"
)

// Config describes this node's side of the mesh. Zero durations and sizes
// take the defaults documented on each field.
type Config struct {
	Node   string            // this node's name (non-empty)
	Listen string            // host:port to accept peer links on ("127.0.0.1:0" allowed)
	Peers  map[string]string // peer name -> its link address; must not contain Node
	Secret []byte            // cluster secret, at least 16 bytes: links authenticate with it

	// ServerTLS and ClientTLS are both set (TLS links) or both nil (plain
	// TCP; the HMAC handshake still authenticates). When ClientTLS has no
	// ServerName, the host of the peer's address is used.
	ServerTLS, ClientTLS *tls.Config

	Window         int           // max unacknowledged messages in flight per link (default 4096)
	BufferMessages int           // max messages held per peer, queued + in flight (default 100000)
	BufferBytes    int64         // max topic+payload+property bytes held per peer (default 64 MiB)
	InterestGrace  time.Duration // a peer down this long is gone: its queue is discarded (default 2m)
	Heartbeat      time.Duration // idle heartbeat interval (default 1s); a link silent 3 intervals is dead, so use one value cluster-wide
	AckDelay       time.Duration // how long an ACK with nothing else to ride on waits to coalesce (default 2ms)
	BackoffMin     time.Duration // first reconnect delay (default 100ms)
	BackoffMax     time.Duration // reconnect delay cap (default 1s)
	// StallAfter: a peer whose link is up but that acknowledged nothing of
	// what it holds for this long (its broker hung) is treated as down:
	// what it holds is reported Buffered, so that the origin broker and the
	// other peers go on (default 2s).
	StallAfter time.Duration
	// RecentInterest: a SNAPSHOT of this node's interest is the set as it
	// was this long ago, followed by the changes since as DELTAs with
	// their times, so that a peer keeping a replay history (the agent's,
	// data_subscription all) replays what it took meanwhile for
	// subscriptions made here while the link was down. 0: the set as it is.
	RecentInterest time.Duration
	// Compress sends message batches DEFLATE-compressed, one stream per
	// link (see compress.go). Received compressed batches are decoded
	// whatever this says.
	Compress bool

	Logger     *slog.Logger          // default: discard; the caller adds the node key
	Registerer prometheus.Registerer // may be nil: no metrics registered
}

// Defaults. Those the cluster file also states come from linkdefault.
const (
	DefaultWindow         = linkdefault.Window
	DefaultBufferMessages = linkdefault.BufferMessages
	DefaultBufferBytes    = linkdefault.BufferBytes
	DefaultInterestGrace  = linkdefault.InterestGrace
	DefaultHeartbeat      = time.Second
	DefaultAckDelay       = 2 * time.Millisecond
	DefaultBackoffMin     = 100 * time.Millisecond
	DefaultBackoffMax     = time.Second
	DefaultStallAfter     = 2 * time.Second

	minSecretLen = linkdefault.MinSecretLength
	// maxNameLen keeps a HELLO well inside the 1 KiB pre-auth frame limit.
	maxNameLen = 255
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("cluster: invalid config")

// validate reports every problem, one line per field.
func (c *Config) validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrConfig, field, fmt.Sprintf(format, args...)))
	}
	if c.Node == "" {
		bad("Node", "empty")
	} else if len(c.Node) > maxNameLen {
		bad("Node", "longer than %d bytes", maxNameLen)
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("Listen", "%q is not host:port: %v", c.Listen, err)
	}
	for _, name := range sortedKeys(c.Peers) {
		addr := c.Peers[name]
		switch {
		case name == "":
			bad("Peers", "empty peer name")
		case name == c.Node:
			bad("Peers", "contains this node %q", name)
		case len(name) > maxNameLen:
			bad("Peers", "name %q longer than %d bytes", name, maxNameLen)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad("Peers", "%s: address %q is not host:port: %v", name, addr, err)
		}
	}
	if len(c.Secret) < minSecretLen {
		bad("Secret", "%d bytes, need at least %d", len(c.Secret), minSecretLen)
	}
	if (c.ServerTLS == nil) != (c.ClientTLS == nil) {
		bad("ServerTLS/ClientTLS", "set both or neither")
	}
	c.validateLimits(bad)
	return errors.Join(errs...)
}

func (c *Config) validateLimits(bad func(field, format string, args ...any)) {
	if c.Window < 0 {
		bad("Window", "negative")
	}
	if c.BufferMessages < 0 {
		bad("BufferMessages", "negative")
	}
	if c.BufferBytes < 0 {
		bad("BufferBytes", "negative")
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"InterestGrace", c.InterestGrace}, {"Heartbeat", c.Heartbeat}, {"AckDelay", c.AckDelay}, {"BackoffMin", c.BackoffMin}, {"BackoffMax", c.BackoffMax}, {"StallAfter", c.StallAfter}, {"RecentInterest", c.RecentInterest}} {
		if d.v < 0 {
			bad(d.field, "negative")
		}
	}
	if c.BackoffMin > 0 && c.BackoffMax > 0 && c.BackoffMin > c.BackoffMax {
		bad("BackoffMin", "%v is above BackoffMax %v", c.BackoffMin, c.BackoffMax)
	}
}

// withDefaults returns a copy with zero values replaced by defaults and the
// peer map copied (the caller may change its own).
func (c Config) withDefaults() Config {
	setDefault(&c.Window, DefaultWindow)
	setDefault(&c.BufferMessages, DefaultBufferMessages)
	setDefault(&c.BufferBytes, DefaultBufferBytes)
	setDefault(&c.InterestGrace, DefaultInterestGrace)
	setDefault(&c.Heartbeat, DefaultHeartbeat)
	setDefault(&c.AckDelay, DefaultAckDelay)
	setDefault(&c.BackoffMin, DefaultBackoffMin)
	setDefault(&c.BackoffMax, DefaultBackoffMax)
	setDefault(&c.StallAfter, DefaultStallAfter)
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = c.BackoffMin
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	peers := make(map[string]string, len(c.Peers))
	for k, v := range c.Peers {
		peers[k] = v
	}
	c.Peers = peers
	c.Secret = append([]byte(nil), c.Secret...)
	return c
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
