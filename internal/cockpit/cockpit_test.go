package cockpit_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/moha-project/moha/internal/agent"
	"github.com/moha-project/moha/internal/cockpit"
	"github.com/moha-project/moha/internal/config"
	"github.com/moha-project/moha/internal/launch"
	"github.com/moha-project/moha/internal/mesh"
	"github.com/moha-project/moha/internal/status"
	"github.com/moha-project/moha/internal/testkit"
)

// TestClusterView (issue 18 §3): the view of a healthy three-node cluster
// shows every node ready and every link up; once node3's agent is stopped
// it names node3 as unreachable and the links to it as down, and is not
// healthy. Found from one agent (Discover), as from the cluster file.
func TestClusterView(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := launch.Up(ctx, launch.Options{Nodes: 3, LBPort: -1, Dir: t.TempDir(), NewAgent: newAgent, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	src, err := cockpit.Discover(ctx, c.MustNode("node1").HTTP, "", 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(src.Agents) != 3 || src.Agents["node3"] != c.MustNode("node3").HTTP {
		t.Fatalf("discovered %v", src.Agents)
	}
	var v *cockpit.View
	testkit.WaitFor(t, 10*time.Second, "a healthy view", func() bool {
		v = cockpit.Read(ctx, src, 3*time.Second)
		return v.Healthy()
	})
	var out bytes.Buffer
	if err := v.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, want := range []string{"3 nodes, 3 ready", "node1", "node2", "node3", "healthy"} {
		if !strings.Contains(text, want) {
			t.Fatalf("view lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "DOWN") {
		t.Fatalf("a healthy view shows something down:\n%s", text)
	}

	c.StopAgent("node3")
	testkit.WaitFor(t, 10*time.Second, "node3 reported unreachable and the links to it down", func() bool {
		v = cockpit.Read(ctx, src, time.Second)
		joined := strings.Join(v.Problems, "\n")
		return strings.Contains(joined, "node3: unreachable") && strings.Contains(joined, "node1: link to node3 down") && strings.Contains(joined, "node2: link to node3 down")
	})
	out.Reset()
	if err := v.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	if v.Healthy() || !strings.Contains(out.String(), "problems:") || !strings.Contains(out.String(), "DOWN") {
		t.Fatalf("the view of a cluster with a stopped agent:\n%s", out.String())
	}
	t.Logf("moha status with node3's agent stopped:\n%s", out.String())
}

func TestSetRates(t *testing.T) {
	at := time.Unix(1000, 0)
	node := func(name string, sent uint64) cockpit.Node {
		st := &status.Status{Node: name, Peers: []status.PeerStatus{{PeerStatus: mesh.PeerStatus{Name: "x", SentMessages: sent}}}}
		return cockpit.Node{Name: name, Status: st}
	}
	prev := &cockpit.View{At: at, Nodes: []cockpit.Node{node("a", 100), node("b", 0)}}
	v := &cockpit.View{At: at.Add(2 * time.Second), Nodes: []cockpit.Node{node("a", 300), {Name: "b"}, node("c", 5)}}
	v.SetRates(prev)
	if len(v.Rates) != 1 || v.Rates["a"] != 100 {
		t.Fatalf("rates %v, want a: 100/s only (b unreachable now, c new)", v.Rates)
	}
	first := &cockpit.View{At: at}
	first.SetRates(nil)
	if first.Rates != nil {
		t.Fatal("rates without an earlier view")
	}
}

// newAgent runs the cluster's agents inside the test process
// (launch.Options.NewAgent: launch does not import the agent).
func newAgent(cfg *config.Cluster, node string, log *slog.Logger) (launch.InProcessAgent, error) {
	a, err := agent.New(agent.Options{Cluster: cfg, Node: node, Logger: log})
	if err != nil {
		return nil, err // not a nil *agent.Agent in a non-nil interface
	}
	return a, nil
}
