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

// TestNodeRestartUnderLoad: a node's agent and broker restart (SIGTERM,
// persistence on) while a publisher on another node keeps publishing QoS 1
// to a persistent subscriber on the restarting node. Every message the
// publisher's broker acknowledged reaches the subscriber once it is back.
//
// The subscriber creates its session with clean start off: Mosquitto 2.0.11
// does not save a session created with clean start on (even with a session
// expiry) across a restart — with it, this test loses everything published
// after the restart, on a single broker as much as in a cluster.
func TestNodeRestartUnderLoad(t *testing.T) {
	c := startCluster(t, 2)
	var mu sync.Mutex
	got := map[string]int{}
	expiry := uint32(600)
	subscribe := func(clean bool) *client {
		cl := connect(t, addr(c, "node1"), "roll-sub", func(cp *paho.Connect) {
			cp.CleanStart = clean
			cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
		})
		cl.pc.AddOnPublishReceived(func(r paho.PublishReceived) (bool, error) {
			mu.Lock()
			got[string(r.Packet.Payload)]++
			mu.Unlock()
			return true, nil
		})
		return cl
	}
	sub := subscribe(false)
	sub.subscribe("roll/#", 1)
	peerKnows(t, c, "node2", "node1", "roll/#", true)

	pub := connect(t, addr(c, "node2"), "roll-pub")
	var sent atomic.Int64
	stop := make(chan struct{})
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			pub.pub("roll/x", 1, strconv.Itoa(i))
			sent.Store(int64(i + 1))
		}
	}()
	waitFor(t, 5*time.Second, "traffic", func() bool { return sent.Load() > 20 })
	c.StopAgent("node1")
	c.Broker("node1").Stop(5 * time.Second)
	if err := c.StartBroker(context.Background(), "node1"); err != nil {
		t.Fatal(err)
	}
	restart(t, c, "node1")
	sub = subscribe(false)
	waitFor(t, 5*time.Second, "more traffic", func() bool { return sent.Load() > 200 })
	close(stop)
	<-pubDone
	n := int(sent.Load())
	var missing []int
	deadline := time.Now().Add(15 * time.Second)
	for {
		missing = missing[:0]
		mu.Lock()
		for i := range n {
			if got[strconv.Itoa(i)] == 0 {
				missing = append(missing, i)
			}
		}
		mu.Unlock()
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged messages never arrived (client channel holds %d): %v\n%s", len(missing), n, len(sub.msgs), missing, statusJSON(agentOf(c, "node1").Status()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
