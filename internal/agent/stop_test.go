package agent_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestCleanStopLosesNothing (issue 14 §1): QoS 1 messages flow from node1
// to a subscriber on node2 while node1's agent is stopped (as by SIGTERM)
// and started again, again and again, mid-stream. What the stopping agent
// had taken from its broker but its peer had not acknowledged must not be
// acknowledged to the broker: the broker redelivers it to the next run.
// Every message arrives (duplicates allowed).
func TestCleanStopLosesNothing(t *testing.T) {
	c := startCluster(t, 2)
	sub := connect(t, addr(c, "node2"), "cs-sub", persistent(600))
	sub.subscribe("cs/#", 1)
	peerKnows(t, c, "node1", "node2", "cs/#", true)
	const publishers = 8
	var published [publishers]atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for p := range publishers {
		pub := connect(t, addr(c, "node1"), "cs-pub-"+strconv.Itoa(p))
		wg.Go(func() {
			ctx := context.Background()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				payload := strconv.Itoa(p) + "/" + strconv.Itoa(i)
				if _, err := pub.pc.Publish(ctx, &paho.Publish{Topic: "cs/x", QoS: 1, Payload: []byte(payload)}); err != nil {
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
			seen[string(sub.expect(1, 10*time.Second)[0].Payload)] = true
		}
	}
	const stops = 20
	for range stops {
		receive(500) // mid-stream
		c.StopAgent("node1")
		restart(t, c, "node1")
	}
	receive(200)
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
			seen[string(m.Payload)] = true
		case <-deadline:
			var missing []string
			for p := range publishers {
				for i := range int(published[p].Load()) {
					if id := strconv.Itoa(p) + "/" + strconv.Itoa(i); !seen[id] {
						missing = append(missing, id)
					}
				}
			}
			t.Fatalf("%d of %d messages lost across %d clean stops of the origin agent, first %v", len(missing), n, stops, missing[:min(10, len(missing))])
		}
	}
	t.Logf("%d messages, %d clean stops of the origin agent: none lost", n, stops)
}
