package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// exampleOptions are the hosts examples/cluster.yaml is written for.
var exampleOptions = ScaffoldOptions{
	Nodes: []string{"10.0.0.11", "10.0.0.12", "10.0.0.13"}, LBs: []string{"10.0.0.2", "10.0.0.3"},
	FloatingIP: "10.0.0.100/24", Interface: "ens3", SecretFile: "moha.secret",
}

// TestScaffoldIsValid: what moha init writes loads and validates once its
// secret file exists, with the hosts given.
func TestScaffoldIsValid(t *testing.T) {
	text, err := Scaffold(exampleOptions)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "moha.secret"), []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Parse([]byte(text), dir)
	if err != nil {
		t.Fatalf("scaffold does not validate: %v\n%s", err, text)
	}
	if len(c.Nodes) != 3 || c.Nodes[1].Broker.Address != "10.0.0.12:1883" || c.Nodes[2].HTTP != "10.0.0.13:9101" {
		t.Fatalf("nodes: %+v", c.Nodes)
	}
	if lb := c.LoadBalancers; len(lb.Hosts) != 2 || lb.Hosts[0].Priority <= lb.Hosts[1].Priority || lb.FloatingIP != "10.0.0.100/24" || lb.Interface != "ens3" {
		t.Fatalf("load balancers: %+v", lb)
	}
	if c.SecretFile != filepath.Join(dir, "moha.secret") {
		t.Fatalf("secret file %q", c.SecretFile)
	}
}

// TestExampleIsTheScaffold: examples/cluster.yaml is what moha init writes
// for its hosts.
func TestExampleIsTheScaffold(t *testing.T) {
	text, err := Scaffold(exampleOptions)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("..", "..", "examples", "cluster.yaml")
	if *updateDoc {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if string(got) != text {
		t.Fatal("examples/cluster.yaml differs from moha init's output: go test ./internal/config -run TestExampleIsTheScaffold -update")
	}
}

func TestScaffoldRefuses(t *testing.T) {
	for name, tc := range map[string]struct {
		o    ScaffoldOptions
		want string
	}{
		"no nodes":       {ScaffoldOptions{SecretFile: "s"}, "no nodes"},
		"lbs without ip": {ScaffoldOptions{Nodes: []string{"a"}, LBs: []string{"b"}, SecretFile: "s"}, "floating IP"},
		"node twice":     {ScaffoldOptions{Nodes: []string{"a", "a:1883"}, SecretFile: "s"}, "twice"},
		"bad host":       {ScaffoldOptions{Nodes: []string{"a b"}, SecretFile: "s"}, "not a host"},
		"lb twice":       {ScaffoldOptions{Nodes: []string{"a"}, LBs: []string{"b", "b"}, FloatingIP: "10.0.0.9/24", SecretFile: "s"}, "twice"},
	} {
		if _, err := Scaffold(tc.o); !errors.Is(err, ErrScaffold) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}
}
