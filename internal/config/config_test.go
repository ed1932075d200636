package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const minimalYAML = `
secret: 0123456789abcdef
nodes:
  - name: a
`

func testdataDir(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestLoadFullFile(t *testing.T) {
	dir := testdataDir(t)
	c, err := Load(filepath.Join("testdata", "cluster.yaml"))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	tls := func(name string) string { return filepath.Join(dir, "tls", name) }
	want := &Cluster{
		Name:                 "factory",
		SecretFile:           filepath.Join(dir, "secret"),
		LinkTLS:              &TLSFiles{CA: tls("ca.pem"), Cert: tls("node.pem"), Key: tls("node.key")},
		Window:               2048,
		BufferMessages:       50000,
		BufferBytes:          32 << 20,
		InterestGrace:        Duration(90 * time.Second),
		DataSubscription:     DataSubscriptionInterest,
		SharedSubscriptions:  SharedPreferLocal,
		ReplayWindow:         Duration(3 * time.Second),
		ReplayBytes:          16 << 20,
		ReplayMargin:         Duration(20 * time.Millisecond),
		MessageSizeLimit:     8 << 20,
		MaxQueuedMessages:    1000000,
		LinkCompression:      CompressionNone,
		SessionReplicas:      ptr(0),
		SessionReplicaWindow: Duration(5 * time.Second),
		Nodes: []Node{
			{
				Name: "node1",
				Broker: Broker{
					Address: "10.0.0.11:1883", Username: "moha-agent", Password: "agent-password",
					TLS:       &TLSFiles{CA: tls("ca.pem"), ServerName: "broker.factory.example"},
					KeepAlive: Duration(20 * time.Second),
				},
				Link: "10.0.0.11:7946", HTTP: "10.0.0.11:9101", DataDir: "/srv/mosquitto",
			},
			{
				Name:   "node2",
				Broker: Broker{Address: "10.0.0.12:1883", KeepAlive: Duration(30 * time.Second)},
				Link:   "10.0.0.12:17946", HTTP: "10.0.0.12:19101", DataDir: "/var/lib/mosquitto",
			},
			{
				Name:   "node3",
				Broker: Broker{Address: "[fd00::13]:1883", KeepAlive: Duration(30 * time.Second)},
				Link:   "[fd00::13]:7946", HTTP: "[fd00::13]:9101", DataDir: "/var/lib/mosquitto",
			},
		},
		LoadBalancers: LoadBalancers{
			Port: 8883, TLSPort: 8883, FloatingIP: "10.0.0.100/24", Interface: "ens3", RouterID: 42,
			Hosts: []LBHost{
				{Name: "lb1", Address: "10.0.0.2", Priority: 150},
				{Name: "lb2", Address: "lb2.factory.example", Priority: 90},
			},
			MaxConn: 20000, CheckInterval: Duration(500 * time.Millisecond), ClientTimeout: Duration(15 * time.Minute),
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Load:\n got %+v\nwant %+v", c, want)
	}
	secret, err := c.SecretBytes()
	if err != nil || string(secret) != "test-secret-not-for-production-0123456789" {
		t.Errorf("SecretBytes = %q, %v; want the file's content without its newline", secret, err)
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse([]byte(minimalYAML), "")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := Default()
	want.Secret = "0123456789abcdef"
	want.Nodes = []Node{{
		Name:   "a",
		Broker: Broker{Address: "127.0.0.1:1883", KeepAlive: Duration(30 * time.Second)},
		Link:   "127.0.0.1:7946", HTTP: "127.0.0.1:9101", DataDir: "/var/lib/mosquitto",
	}}
	if !reflect.DeepEqual(c, &want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", c, &want)
	}
	d := Default()
	if d.Name != "moha" || d.Window != 4096 || d.BufferMessages != 100000 || d.BufferBytes != 64<<20 ||
		d.InterestGrace.Std() != 2*time.Minute || d.LoadBalancers.Port != 1883 || d.LoadBalancers.Interface != "eth0" ||
		d.LoadBalancers.RouterID != 51 || d.LoadBalancers.MaxConn != 10000 ||
		d.LoadBalancers.CheckInterval.Std() != time.Second || d.LoadBalancers.ClientTimeout.Std() != 10*time.Minute {
		t.Errorf("Default() = %+v", d)
	}
}

func TestLBHostPriorityDefaults(t *testing.T) {
	c, err := Parse([]byte(minimalYAML+`
load_balancers:
  hosts:
    - {name: lb1, address: 10.0.0.2}
    - {name: lb2, address: 10.0.0.3}
    - {name: lb3, address: 10.0.0.4, priority: 7}
`), "")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	var got []int
	for _, h := range c.LoadBalancers.Hosts {
		got = append(got, h.Priority)
	}
	if want := []int{150, 100, 7}; !reflect.DeepEqual(got, want) {
		t.Errorf("priorities = %v, want %v", got, want)
	}
}

func TestParseUnknownKeys(t *testing.T) {
	_, err := Parse([]byte(`secret: 0123456789abcdef
nodes:
  - name: a
    brokr:
      address: 127.0.0.1:1883
load_balancer:
  port: 1
`), "")
	if err == nil {
		t.Fatal("Parse accepted unknown keys")
	}
	for _, want := range []string{`line 4: unknown key "brokr"`, `line 6: unknown key "load_balancer"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("error %v is not ErrInvalid", err)
	}
}

func TestParseBadValues(t *testing.T) {
	tests := []struct{ yaml, want string }{
		{"interest_grace: 120", `line 1: "120" is not a duration string`},
		{"interest_grace: soon", `line 1: "soon" is not a duration`},
		{"interest_grace: [1]", "line 1: a list is not a duration"},
		{"buffer_bytes: 64MB", `line 1: "64MB" is not a size`},
		{"buffer_bytes: 99999999999TiB", "too large"},
		{"buffer_bytes: {a: 1}", "line 1: a mapping is not a size"},
		{"window: many", "line 1: cannot unmarshal"},
		{"nodes: {a: 1}", "line 1: cannot unmarshal"},
		{"- a\n- b", "cannot unmarshal"},
		{"name: a\n---\nname: b", "line 2: a cluster file holds one YAML document"},
		{"name: [", "yaml:"},
		{"name: a\nname: b", `mapping key "name" already defined`},
	}
	for _, tc := range tests {
		_, err := Parse([]byte(tc.yaml), "")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) error = %v, want it to contain %q", tc.yaml, err, tc.want)
		}
	}
}

func TestParseReportsEveryBadValue(t *testing.T) {
	_, err := Parse([]byte("interest_grace: 5\nbuffer_bytes: lots\nwindow: x\n"), "")
	if err == nil {
		t.Fatal("Parse accepted bad values")
	}
	for _, want := range []string{"line 1:", "line 2:", "line 3:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestEmptyFileExplainsWhatIsMissing(t *testing.T) {
	_, err := Parse(nil, "")
	if err == nil {
		t.Fatal("empty file accepted")
	}
	for _, want := range []string{"nodes: at least one node", "secret: required"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestLoadErrorNamesFileAndListsProblemsOnLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cluster.yaml")
	if err := os.WriteFile(path, []byte("window: -1\nnodes: [{name: 'bad name'}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil {
		t.Fatal("Load accepted an invalid file")
	}
	lines := strings.Split(err.Error(), "\n")
	if !strings.Contains(lines[0], path) {
		t.Errorf("first line %q does not name the file", lines[0])
	}
	if len(lines) != 4 { // header, secret, window, nodes[0].name
		t.Errorf("want 3 problems after the header, got:\n%v", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want ErrNotExist", err)
	}
}

func TestNodeLookup(t *testing.T) {
	c, err := Parse([]byte(`secret: 0123456789abcdef
nodes:
  - {name: a, broker: {address: "127.0.0.1:1883"}, cluster: "127.0.0.1:7001", http: "127.0.0.1:8001"}
  - {name: b, broker: {address: "127.0.0.1:1884"}, cluster: "127.0.0.1:7002", http: "127.0.0.1:8002"}
`), "")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	n, err := c.Node("b")
	if err != nil || n.Broker.Address != "127.0.0.1:1884" {
		t.Fatalf("Node(b) = %+v, %v", n, err)
	}
	if n != &c.Nodes[1] {
		t.Error("Node returns a copy, want a pointer into the cluster")
	}
	_, err = c.Node("c")
	if !errors.Is(err, ErrUnknownNode) || !strings.Contains(err.Error(), "known: a, b") {
		t.Errorf("Node(c) error = %v, want ErrUnknownNode listing a, b", err)
	}
	var empty Cluster
	if _, err := empty.Node("a"); !errors.Is(err, ErrUnknownNode) {
		t.Errorf("Node on empty cluster = %v", err)
	}
	var none *Cluster
	if _, err := none.Node("a"); !errors.Is(err, ErrUnknownNode) {
		t.Errorf("Node on nil cluster = %v", err)
	}
	if err := none.Validate(); !errors.Is(err, ErrInvalid) {
		t.Errorf("Validate on nil cluster = %v", err)
	}
	if _, err := none.SecretBytes(); !errors.Is(err, ErrNoSecret) {
		t.Errorf("SecretBytes on nil cluster = %v", err)
	}
}

func TestSecretBytes(t *testing.T) {
	inline := Cluster{Secret: "0123456789abcdef"}
	if got, err := inline.SecretBytes(); err != nil || string(got) != "0123456789abcdef" {
		t.Errorf("inline SecretBytes = %q, %v", got, err)
	}
	if _, err := (&Cluster{}).SecretBytes(); !errors.Is(err, ErrNoSecret) {
		t.Errorf("no secret: %v, want ErrNoSecret", err)
	}
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("  tiny \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := (&Cluster{SecretFile: short}).SecretBytes(); !errors.Is(err, ErrNoSecret) {
		t.Errorf("short secret file: %v, want ErrNoSecret", err)
	}
	if _, err := (&Cluster{SecretFile: filepath.Join(dir, "none")}).SecretBytes(); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing secret file: %v, want ErrNotExist", err)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	c, err := Load(filepath.Join("testdata", "cluster.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(data, t.TempDir()) // paths are absolute now: baseDir must not matter
	if err != nil {
		t.Fatalf("Parse(Marshal()): %v\n%s", err, data)
	}
	if !reflect.DeepEqual(c, again) {
		t.Errorf("round trip changed the cluster:\n got %+v\nwant %+v\n%s", again, c, data)
	}
	for _, want := range []string{"buffer_bytes: 32MiB", "interest_grace: 1m30s", "check_interval: 500ms"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("marshalled file lacks %q:\n%s", want, data)
		}
	}
}

func TestSplitHostPort(t *testing.T) {
	tests := []struct {
		addr string
		host string
		port int
		ok   bool
	}{
		{"127.0.0.1:1883", "127.0.0.1", 1883, true},
		{"[::1]:65535", "::1", 65535, true},
		{"broker.example:1", "broker.example", 1, true},
		{":1883", "", 1883, true},
		{"127.0.0.1", "", 0, false},
		{"127.0.0.1:0", "", 0, false},
		{"127.0.0.1:65536", "", 0, false},
		{"127.0.0.1:+80", "", 0, false},
		{"127.0.0.1:mqtt", "", 0, false},
		{"127.0.0.1:99999999999999999999", "", 0, false},
		{"::1:1883", "", 0, false},
	}
	for _, tc := range tests {
		host, port, err := SplitHostPort(tc.addr)
		if (err == nil) != tc.ok || host != tc.host || port != tc.port {
			t.Errorf("SplitHostPort(%q) = %q, %d, %v; want %q, %d, ok=%v", tc.addr, host, port, err, tc.host, tc.port, tc.ok)
		}
	}
}

func TestMarshalKeepsTrickyStrings(t *testing.T) {
	for _, pw := range []string{"null", "~", "yes", "0x10", "1e3", " lead", "trail ", "a: b", "#x", "'q'", `"`, "\u2028", "\ufeffbom", "- x", "&a", "*a", "!tag", "%x", "@x", "`x", "{x}", "[x]", "é"} {
		c, err := Parse([]byte(minimalYAML), "")
		if err != nil {
			t.Fatal(err)
		}
		c.Nodes[0].Broker.Username, c.Nodes[0].Broker.Password = "user", pw
		data, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse(data, "")
		if err != nil {
			t.Errorf("password %q: %v\n%s", pw, err, data)
			continue
		}
		if got := again.Nodes[0].Broker.Password; got != pw {
			t.Errorf("password %q came back as %q:\n%s", pw, got, data)
		}
	}
}

// TestEffectiveQuorum: majority from three nodes, none for two, or what the
// file says.
func TestEffectiveQuorum(t *testing.T) {
	nodes := func(n int) []Node { return make([]Node, n) }
	for _, tc := range []struct {
		quorum string
		nodes  int
		want   string
	}{
		{"", 1, QuorumNone}, {"", 2, QuorumNone}, {"", 3, QuorumMajority}, {"", 5, QuorumMajority},
		{QuorumMajority, 2, QuorumMajority}, {QuorumNone, 3, QuorumNone},
	} {
		c := Cluster{Quorum: tc.quorum, Nodes: nodes(tc.nodes)}
		if got := c.EffectiveQuorum(); got != tc.want {
			t.Errorf("quorum %q with %d nodes: %q, want %q", tc.quorum, tc.nodes, got, tc.want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestMaxQueuedMessagesBounds(t *testing.T) {
	c := Default()
	c.Secret = strings.Repeat("s", MinSecretLength)
	c.Nodes = []Node{{Name: "n1", Broker: Broker{Address: "127.0.0.1:1883"}, Link: "127.0.0.1:7946", HTTP: "127.0.0.1:9101"}}
	c.MaxQueuedMessages = 1000
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "max_queued_messages") {
		t.Fatalf("max_queued_messages 1000: %v, want refused", err)
	}
	c.MaxQueuedMessages = minQueuedMessages
	if err := c.Validate(); err != nil {
		t.Fatalf("max_queued_messages %d: %v", minQueuedMessages, err)
	}
}
