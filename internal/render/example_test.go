package render

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/moha-project/moha/internal/config"
)

// TestExampleRendersEverything (issue 18 §1): examples/cluster.yaml — what
// `moha init` writes for three nodes and two load balancers — renders every
// target, and the real checkers accept what it renders: haproxy -c, keepalived
// -t (in a namespace with the VRRP interface), systemd-analyze verify, and
// mosquitto starting on each node's config (its addresses moved to loopback:
// this machine has not the example's).
func TestExampleRendersEverything(t *testing.T) {
	example, err := os.ReadFile(filepath.Join("..", "..", "examples", "cluster.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "moha.secret"), []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(example, dir)
	if err != nil {
		t.Fatalf("examples/cluster.yaml: %v", err)
	}

	haproxyConf, err := HAProxy(c, HAProxyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, findBinary(t, "haproxy"), "-c", "-f", writeTemp(t, "haproxy.cfg", haproxyConf)).CombinedOutput(); err != nil {
		t.Errorf("haproxy -c: %v\n%s", err, out)
	}

	keepalived := findBinary(t, "keepalived")
	ns := newNetns(t, c.LoadBalancers.Interface)
	for _, lb := range c.LoadBalancers.Hosts {
		conf, err := Keepalived(c, lb.Name, KeepalivedOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if out, err := ns.exec(keepalived, "-t", "-f", writeTemp(t, "keepalived.conf", conf)); err != nil || len(out) > 0 {
			t.Errorf("keepalived -t for %s: %v\n%s", lb.Name, err, out)
		}
	}

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		files, err := Systemd(c, n.Name, SystemdOptions{Binary: self})
		if err != nil {
			t.Fatal(err)
		}
		if out, err := verifyUnits(t, systemdUnitDir(t, files), AgentUnit, "mosquitto.service"); err != nil || len(out) > 0 {
			t.Errorf("systemd-analyze verify for %s: %v\n%s", n.Name, err, out)
		}
		if _, err := Mosquitto(c, n.Name, MosquittoOptions{}); err != nil {
			t.Errorf("render mosquitto for %s: %v", n.Name, err)
		}
	}
	// node1's broker config, started for real with its address and data
	// directory moved to this machine.
	b := newBrokerFixture(t, "")
	c.Nodes[0].Broker.Address = fmt.Sprintf("127.0.0.1:%d", b.port)
	c.Nodes[0].DataDir = b.dataDir
	conf, err := Mosquitto(c, "node1", MosquittoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b.start(t, conf)
}
