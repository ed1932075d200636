package agent_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/moha-project/moha/internal/launch"
	"github.com/moha-project/moha/internal/testkit"
)

// TestSigtermLosesNothing (issue 14 §1): the origin agent runs as its own
// process (`moha agent`) and is stopped with SIGTERM, as systemd stops it,
// then started again — sigtermCycles times, mid-stream, while QoS 1
// messages flow to a subscriber on the other node. Every message arrives
// (duplicates allowed).
func TestSigtermLosesNothing(t *testing.T) {
	const sigtermCycles = 100
	c := startProcessCluster(t, launch.Options{Nodes: 2, LBPort: -1})
	sub := connect(t, addr(c, "node2"), "term-sub", persistent(600))
	sub.subscribe("term/#", 1)
	waitFor(t, 10*time.Second, "node1 to route term/# to node2", func() bool {
		pub := connect(t, addr(c, "node1"), "term-probe")
		defer pub.drop()
		pub.pub("term/probe", 1, "probe")
		select {
		case <-sub.msgs:
			return true
		case <-time.After(200 * time.Millisecond):
			return false
		}
	})

	st := startStream(t, addr(c, "node1"), "term/x", 4, sub)
	for range sigtermCycles {
		st.receive(100)      // mid-stream
		c.StopAgent("node1") // SIGTERM, then wait for the process to exit
		if err := c.StartAgent(context.Background(), "node1"); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitReady(context.Background(), "node1"); err != nil {
			t.Fatal(err)
		}
	}
	st.receive(100)
	n := st.finish(15*time.Second, "across SIGTERMs of the origin agent")
	t.Logf("%d messages, %d SIGTERMs of the origin agent: none lost", n, sigtermCycles)
}

func TestMain(m *testing.M) {
	code := m.Run()
	testkit.RemoveMohaBinary()
	os.Exit(code)
}
