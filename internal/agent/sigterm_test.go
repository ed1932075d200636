package agent_test

import (
	"context"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := launch.Up(ctx, launch.Options{Nodes: 2, LBPort: -1, Dir: t.TempDir(), AgentBinary: testkit.MohaBinary(t), Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	for _, n := range c.Config.Nodes {
		if err := c.WaitReady(ctx, n.Name); err != nil {
			t.Fatal(err)
		}
	}
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

	const publishers = 4
	var published [publishers]atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for p := range publishers {
		pub := connect(t, addr(c, "node1"), "term-pub-"+strconv.Itoa(p))
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				payload := strconv.Itoa(p) + "/" + strconv.Itoa(i)
				if _, err := pub.pc.Publish(context.Background(), &paho.Publish{Topic: "term/x", QoS: 1, Payload: []byte(payload)}); err != nil {
					t.Errorf("publish %s: %v", payload, err)
					return
				}
				published[p].Store(int64(i + 1))
			}
		})
	}
	seen := map[string]bool{}
	receive := func(n int) {
		t.Helper()
		for range n {
			if m := sub.expect(1, 10*time.Second)[0]; m.Topic == "term/x" {
				seen[string(m.Payload)] = true
			}
		}
	}
	for range sigtermCycles {
		receive(100)         // mid-stream
		c.StopAgent("node1") // SIGTERM, then wait for the process to exit
		if err := c.StartAgent(context.Background(), "node1"); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitReady(context.Background(), "node1"); err != nil {
			t.Fatal(err)
		}
	}
	receive(100)
	close(stop)
	wg.Wait()
	n := 0
	for p := range publishers {
		n += int(published[p].Load())
	}
	deadline := time.After(15 * time.Second)
	for len(seen) < n {
		select {
		case m := <-sub.msgs:
			if m.Topic == "term/x" {
				seen[string(m.Payload)] = true
			}
		case <-deadline:
			t.Fatalf("%d of %d messages lost across %d SIGTERMs of the origin agent", n-len(seen), n, sigtermCycles)
		}
	}
	t.Logf("%d messages, %d SIGTERMs of the origin agent: none lost", n, sigtermCycles)
}

func TestMain(m *testing.M) {
	code := m.Run()
	testkit.RemoveMohaBinary()
	os.Exit(code)
}
