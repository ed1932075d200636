package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moha-project/moha/internal/agent"
	"github.com/moha-project/moha/internal/config"
	"github.com/moha-project/moha/internal/launch"
	"github.com/moha-project/moha/internal/testkit"
)

// TestStatusCommand: moha status --cluster exits 0 on a healthy cluster and
// with errUnhealthy once an agent is stopped; --json prints the view.
func TestStatusCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	c, err := launch.Up(ctx, launch.Options{Nodes: 2, LBPort: -1, Dir: dir, NewAgent: newAgent, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	file := filepath.Join(dir, "cluster.yaml")
	status := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(ctx, append([]string{"status", "--cluster", file}, args...), &out, &errOut)
		return out.String(), err
	}
	var out string
	testkit.WaitFor(t, 10*time.Second, "moha status to find the cluster healthy", func() bool {
		out, err = status()
		return err == nil
	})
	if !strings.Contains(out, "healthy") {
		t.Fatalf("healthy cluster:\n%s", out)
	}
	if js, err := status("--json"); err != nil || !strings.Contains(js, `"problems": null`) || !strings.Contains(js, `"name": "node2"`) {
		t.Fatalf("--json: %v\n%s", err, js)
	}
	c.StopAgent("node2")
	if out, err := status(); !errors.Is(err, errUnhealthy) || !strings.Contains(out, "node2: unreachable") {
		t.Fatalf("with node2's agent stopped: %v\n%s", err, out)
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
