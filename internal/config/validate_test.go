package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// validCluster is a three-node cluster on one machine that passes Validate.
func validCluster(t *testing.T) *Cluster {
	t.Helper()
	c, err := Parse([]byte(`
secret: 0123456789abcdef
nodes:
  - {name: n1, broker: {address: "127.0.0.1:1883"}, cluster: "127.0.0.1:7001", http: "127.0.0.1:8001", data_dir: /tmp/n1}
  - {name: n2, broker: {address: "127.0.0.1:1884"}, cluster: "127.0.0.1:7002", http: "127.0.0.1:8002", data_dir: /tmp/n2}
  - {name: n3, broker: {address: "10.0.0.3:1883"}}
load_balancers:
  floating_ip: 10.0.0.100/24
  hosts:
    - {name: lb1, address: 10.0.0.1}
    - {name: lb2, address: 10.0.0.2}
`), "")
	if err != nil {
		t.Fatalf("valid cluster rejected: %v", err)
	}
	return c
}

// allTLS gives every node of c a valid client TLS listener.
func allTLS(c *Cluster) *Cluster {
	for i := range c.Nodes {
		c.Nodes[i].ClientTLS = &ClientTLS{Port: 8883, Cert: "/c.pem", Key: "/c.key"}
	}
	return c
}

func TestValidateAcceptsValidCluster(t *testing.T) {
	if err := validCluster(t).Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidationMessages(t *testing.T) {
	dir := t.TempDir()
	shortSecret := writeFile(t, dir, "short", "only-ten-b\n")
	goodSecret := writeFile(t, dir, "good", "0123456789abcdef0123\n")
	pem := writeFile(t, dir, "ca.pem", "-----BEGIN CERTIFICATE-----\n")
	missing := filepath.Join(dir, "missing.pem")
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		mutate func(c *Cluster)
		field  string // the field the one problem must name
		want   string // and a part of its message
	}{
		{"cluster name", func(c *Cluster) { c.Name = "my cluster" }, "name", "must be 1 to 64"},
		{"no secret", func(c *Cluster) { c.Secret = "" }, "secret", "required"},
		{"short secret", func(c *Cluster) { c.Secret = "short" }, "secret", "need at least 16"},
		{"secret control char", func(c *Cluster) { c.Secret = "0123456789abcdef\n" }, "secret", "control character"},
		{"secret and file", func(c *Cluster) { c.SecretFile = goodSecret }, "secret", "not both"},
		{"secret file missing", func(c *Cluster) { c.Secret, c.SecretFile = "", missing }, "secret_file", "cannot be read"},
		{"secret file directory", func(c *Cluster) { c.Secret, c.SecretFile = "", dir }, "secret_file", "not a regular file"},
		{"secret file fifo", func(c *Cluster) { c.Secret, c.SecretFile = "", fifo }, "secret_file", "not a regular file"},
		{"secret file short", func(c *Cluster) { c.Secret, c.SecretFile = "", shortSecret }, "secret_file", "need at least 16"},
		{"link tls no ca", func(c *Cluster) { c.LinkTLS = &TLSFiles{Cert: pem, Key: pem} }, "link_tls.ca", "required"},
		{"link tls no cert", func(c *Cluster) { c.LinkTLS = &TLSFiles{CA: pem, Key: pem} }, "link_tls.cert", "required"},
		{"link tls no key", func(c *Cluster) { c.LinkTLS = &TLSFiles{CA: pem, Cert: pem} }, "link_tls.key", "required"},
		{"link tls unreadable", func(c *Cluster) { c.LinkTLS = &TLSFiles{CA: pem, Cert: pem, Key: missing} }, "link_tls.key", "cannot be read"},
		{"window", func(c *Cluster) { c.Window = -1 }, "window", "positive"},
		{"buffer messages", func(c *Cluster) { c.BufferMessages = -5 }, "buffer_messages", "positive"},
		{"buffer bytes", func(c *Cluster) { c.BufferBytes = -1 }, "buffer_bytes", "positive"},
		{"interest grace", func(c *Cluster) { c.InterestGrace = Duration(-time.Second) }, "interest_grace", "positive"},
		{"data subscription", func(c *Cluster) { c.DataSubscription = "some" }, "data_subscription", `want "all" or "interest"`},
		{"shared subscriptions", func(c *Cluster) { c.SharedSubscriptions = "local" }, "shared_subscriptions", `want "spread" or "prefer_local"`},
		{"short status token", func(c *Cluster) { c.StatusToken = "short" }, "status_token", "need at least 16"},
		{"client tls on some nodes", func(c *Cluster) { c.Nodes[0].ClientTLS = &ClientTLS{Port: 8883, Cert: "/c.pem", Key: "/c.key"} }, "nodes[].client_tls", "every node or on none"},
		{"client tls relative", func(c *Cluster) { allTLS(c).Nodes[0].ClientTLS.Cert = "c.pem" }, "nodes[0].client_tls.cert", "not an absolute path"},
		{"client tls no key", func(c *Cluster) { allTLS(c).Nodes[0].ClientTLS.Key = "" }, "nodes[0].client_tls.key", "required"},
		{"client tls port", func(c *Cluster) { allTLS(c).Nodes[0].ClientTLS.Port = 70000 }, "nodes[0].client_tls.port", "1..65535"},
		{"client tls on the mqtt port", func(c *Cluster) { allTLS(c).LoadBalancers.TLSPort = c.LoadBalancers.Port }, "load_balancers.tls_port", "the same as load_balancers.port"},
		{"replay window", func(c *Cluster) { c.ReplayWindow = Duration(-time.Second) }, "replay_window", "positive"},
		{"session replicas", func(c *Cluster) { c.SessionReplicas = ptr(3) }, "session_replicas", "want 0, 1 or 2"},
		{"session replica window", func(c *Cluster) { c.SessionReplicaWindow = Duration(-time.Second) }, "session_replica_window", "positive"},
		{"replay bytes", func(c *Cluster) { c.ReplayBytes = -1 }, "replay_bytes", "positive"},
		{"replay margin", func(c *Cluster) { c.ReplayMargin = Duration(-time.Millisecond) }, "replay_margin", "positive"},
		{"message size limit", func(c *Cluster) { c.MessageSizeLimit = 64 << 20 }, "message_size_limit", "at most"},
		{"quorum", func(c *Cluster) { c.Quorum = "half" }, "quorum", `want "majority" or "none"`},
		{"no nodes", func(c *Cluster) { c.Nodes = nil }, "nodes", "at least one node"},
		{"node name", func(c *Cluster) { c.Nodes[1].Name = "n/2" }, "nodes[1].name", "must be 1 to 64"},
		{"node name too long", func(c *Cluster) { c.Nodes[1].Name = strings.Repeat("a", 65) }, "nodes[1].name", "must be 1 to 64"},
		{"node name duplicate", func(c *Cluster) { c.Nodes[2].Name = "n1" }, "nodes[2].name", "already the name of nodes[0]"},
		{"broker address", func(c *Cluster) { c.Nodes[1].Broker.Address = "x" }, "nodes[1].broker.address", `"x" is not host:port`},
		{"broker port", func(c *Cluster) { c.Nodes[1].Broker.Address = "127.0.0.1:0" }, "nodes[1].broker.address", "not in 1..65535"},
		{"broker empty host", func(c *Cluster) { c.Nodes[1].Broker.Address = ":1883" }, "nodes[1].broker.address", "host is empty"},
		{"broker unspecified", func(c *Cluster) { c.Nodes[1].Broker.Address = "0.0.0.0:1883" }, "nodes[1].broker.address", "cannot be dialled"},
		{"broker bad host", func(c *Cluster) { c.Nodes[1].Broker.Address = "bad_host!:1883" }, "nodes[1].broker.address", "neither an IP"},
		{"cluster address", func(c *Cluster) { c.Nodes[0].Link = "127.0.0.1:70000" }, "nodes[0].cluster", "not in 1..65535"},
		{"http address", func(c *Cluster) { c.Nodes[0].HTTP = "127.0.0.1" }, "nodes[0].http", "not host:port"},
		{"username control", func(c *Cluster) { c.Nodes[0].Broker.Username = "a\nb" }, "nodes[0].broker.username", "control character"},
		{"password without user", func(c *Cluster) { c.Nodes[0].Broker.Password = "pw" }, "nodes[0].broker.password", "without broker.username"},
		{"broker tls no ca", func(c *Cluster) { c.Nodes[0].Broker.TLS = &TLSFiles{} }, "nodes[0].broker.tls.ca", "required"},
		{"broker tls cert only", func(c *Cluster) { c.Nodes[0].Broker.TLS = &TLSFiles{CA: pem, Cert: pem} }, "nodes[0].broker.tls.key", "required when cert"},
		{"broker tls key only", func(c *Cluster) { c.Nodes[0].Broker.TLS = &TLSFiles{CA: pem, Key: pem} }, "nodes[0].broker.tls.cert", "required when key"},
		{"broker tls ca unreadable", func(c *Cluster) { c.Nodes[0].Broker.TLS = &TLSFiles{CA: missing} }, "nodes[0].broker.tls.ca", "cannot be read"},
		{"broker tls server name", func(c *Cluster) { c.Nodes[0].Broker.TLS = &TLSFiles{CA: pem, ServerName: "a\tb"} }, "nodes[0].broker.tls.server_name", "control"},
		{"keepalive negative", func(c *Cluster) { c.Nodes[0].Broker.KeepAlive = Duration(-time.Second) }, "nodes[0].broker.keepalive", "positive"},
		{"keepalive fraction", func(c *Cluster) { c.Nodes[0].Broker.KeepAlive = Duration(1500 * time.Millisecond) }, "nodes[0].broker.keepalive", "whole seconds"},
		{"keepalive too long", func(c *Cluster) { c.Nodes[0].Broker.KeepAlive = Duration(24 * time.Hour) }, "nodes[0].broker.keepalive", "at most 65535s"},
		{"data dir relative", func(c *Cluster) { c.Nodes[2].DataDir = "data" }, "nodes[2].data_dir", "not an absolute path"},
		{"collision across nodes", func(c *Cluster) { c.Nodes[1].Link = "127.0.0.1:7001" }, "nodes[1].cluster", "also nodes[0].cluster"},
		{"collision with broker", func(c *Cluster) { c.Nodes[1].HTTP = "127.0.0.1:1883" }, "nodes[1].http", "also nodes[0].broker.address"},
		{"collision within node", func(c *Cluster) { c.Nodes[0].HTTP = "127.0.0.1:7001" }, "nodes[0].http", "also nodes[0].cluster"},
		{"collision ipv4-mapped", func(c *Cluster) { c.Nodes[1].Broker.Address = "[::ffff:127.0.0.1]:1883" }, "nodes[1].broker.address", "also nodes[0].broker.address"},
		{"collision case", func(c *Cluster) { c.Nodes[2].Broker.Address = "Broker:1"; c.Nodes[1].Broker.Address = "broker:1" }, "nodes[2].broker.address", "also nodes[1].broker.address"},
		{"lb port", func(c *Cluster) { c.LoadBalancers.Port = 70000 }, "load_balancers.port", "not a port"},
		{"floating ip", func(c *Cluster) { c.LoadBalancers.FloatingIP = "10.0.0.100" }, "load_balancers.floating_ip", "prefix length"},
		{"interface", func(c *Cluster) { c.LoadBalancers.Interface = "eth 0" }, "load_balancers.interface", "not a network interface"},
		{"router id", func(c *Cluster) { c.LoadBalancers.RouterID = 256 }, "load_balancers.virtual_router_id", "1..255"},
		{"maxconn", func(c *Cluster) { c.LoadBalancers.MaxConn = -1 }, "load_balancers.maxconn", "positive"},
		{"check interval", func(c *Cluster) { c.LoadBalancers.CheckInterval = Duration(-1) }, "load_balancers.check_interval", "positive"},
		{"check interval fraction", func(c *Cluster) { c.LoadBalancers.CheckInterval = Duration(1500 * time.Microsecond) }, "load_balancers.check_interval", "whole number of milliseconds"},
		{"client timeout", func(c *Cluster) { c.LoadBalancers.ClientTimeout = Duration(-time.Minute) }, "load_balancers.client_timeout", "positive"},
		{"lb host name", func(c *Cluster) { c.LoadBalancers.Hosts[0].Name = "" }, "load_balancers.hosts[0].name", "must be 1 to 64"},
		{"lb host duplicate", func(c *Cluster) { c.LoadBalancers.Hosts[1].Name = "lb1" }, "load_balancers.hosts[1].name", "already the name"},
		{"lb host address port", func(c *Cluster) { c.LoadBalancers.Hosts[1].Address = "10.0.0.2:22" }, "load_balancers.hosts[1].address", "without a port"},
		{"lb host address empty", func(c *Cluster) { c.LoadBalancers.Hosts[1].Address = "" }, "load_balancers.hosts[1].address", "host is empty"},
		{"priority low", func(c *Cluster) { c.LoadBalancers.Hosts[0].Priority = -1 }, "load_balancers.hosts[0].priority", "1..254"},
		{"priority high", func(c *Cluster) { c.LoadBalancers.Hosts[1].Priority = 255 }, "load_balancers.hosts[1].priority", "1..254"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := validCluster(t)
			tc.mutate(c)
			err := c.Validate()
			if err == nil {
				t.Fatal("Validate accepted it")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not match ErrInvalid", err)
			}
			problems := err.(interface{ Unwrap() []error }).Unwrap()
			if len(problems) != 1 {
				t.Errorf("want exactly one problem, got %d:\n%v", len(problems), err)
			}
			var fe *FieldError
			if !errors.As(problems[0], &fe) || fe.Field != tc.field {
				t.Fatalf("problem %q does not name field %q", problems[0], tc.field)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, tc.field+": ") || !strings.Contains(msg, tc.want) {
				t.Errorf("message %q, want %q: ...%s...", msg, tc.field, tc.want)
			}
		})
	}
}

func TestValidateFillsDefaults(t *testing.T) {
	c := Default()
	c.Secret = "0123456789abcdef"
	c.Nodes = []Node{{Name: "a", Broker: Broker{Address: "10.1.1.1:1883"}}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	n := c.Nodes[0]
	if n.Broker.KeepAlive.Std() != DefaultKeepAlive || n.Link != "10.1.1.1:7946" || n.HTTP != "10.1.1.1:9101" || n.DataDir != DefaultDataDir {
		t.Errorf("Validate left defaults unfilled: %+v", n)
	}
}

func TestDerivedDefaultsCollideOnOneHost(t *testing.T) {
	_, err := Parse([]byte(`
secret: 0123456789abcdef
nodes:
  - {name: a, broker: {address: "127.0.0.1:1883"}}
  - {name: b, broker: {address: "127.0.0.1:1884"}}
`), "")
	if err == nil {
		t.Fatal("two nodes on one host with default agent ports accepted")
	}
	for _, want := range []string{
		"nodes[1].cluster: 127.0.0.1:7946 is also nodes[0].cluster",
		"nodes[1].http: 127.0.0.1:9101 is also nodes[0].http",
		"set cluster and http explicitly",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestInvalidBrokerAddressGetsNoDerivedDefaults(t *testing.T) {
	_, err := Parse([]byte("secret: 0123456789abcdef\nnodes: [{name: a, broker: {address: nonsense}}]\n"), "")
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"nodes[0].broker.address", "nodes[0].cluster: required", "nodes[0].http: required"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := validCluster(t)
	c.Window = -1
	c.Nodes[0].Name = ""
	c.LoadBalancers.RouterID = 300
	err := c.Validate()
	if n := len(err.(interface{ Unwrap() []error }).Unwrap()); n != 3 {
		t.Errorf("want 3 problems, got %d: %v", n, err)
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
