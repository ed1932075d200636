package agent_test

import (
	"context"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/moha-project/moha/internal/config"
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
	st := startStream(t, addr(c, "node1"), "cs/x", 8, sub)
	const stops = 20
	for range stops {
		st.receive(500) // mid-stream
		c.StopAgent("node1")
		restart(t, c, "node1")
	}
	st.receive(500)
	n := st.finish(15*time.Second, "across clean stops of the origin agent")
	t.Logf("%d messages, %d clean stops of the origin agent: none lost", n, stops)
}

// TestStuckPeerDoesNotStopTheOthers (issue 14 §2): node3's broker hangs
// (SIGSTOP) while node1 forwards QoS 1 messages that node2 and node3 both
// want. Node3's agent takes messages until node1's buffer for it is full;
// after that node1 drops for node3, counted, and never waits: node2 keeps
// getting everything. Once node3's broker runs again its subscriber gets
// what fit in the buffer, and what it misses is exactly what was counted.
func TestStuckPeerDoesNotStopTheOthers(t *testing.T) {
	const buffer, n = 500, 5000
	c := startCluster(t, 3, func(cl *config.Cluster) { cl.BufferMessages = buffer })
	sub2 := connect(t, addr(c, "node2"), "stuck-sub2", persistent(600))
	sub2.subscribe("stuck/#", 1)
	sub3 := connect(t, addr(c, "node3"), "stuck-sub3", persistent(600))
	sub3.subscribe("stuck/#", 1)
	peerKnows(t, c, "node1", "node2", "stuck/#", true)
	peerKnows(t, c, "node1", "node3", "stuck/#", true)
	pub := connect(t, addr(c, "node1"), "stuck-pub")

	broker3 := c.Broker("node3")
	broker3.Signal(syscall.SIGSTOP)
	stopped := true
	defer func() {
		if stopped {
			broker3.Signal(syscall.SIGCONT)
		}
	}()
	start := time.Now()
	for i := range n {
		pub.pub("stuck/x", 1, strconv.Itoa(i))
	}
	got2 := map[string]bool{}
	for len(got2) < n {
		got2[string(sub2.expect(1, 10*time.Second)[0].Payload)] = true
	}
	t.Logf("node2 got %d messages in %v while node3's broker was stopped", n, time.Since(start).Round(time.Millisecond))
	http1 := c.MustNode("node1").HTTP
	dropped := metricSum(t, http1, "moha_peer_dropped_messages_total")
	if dropped == 0 {
		t.Fatal("node1 dropped nothing for the stuck peer: the test proves nothing")
	}

	broker3.Signal(syscall.SIGCONT)
	stopped = false
	got3 := map[string]bool{}
	deadline := time.After(20 * time.Second)
	for float64(len(got3))+dropped < n {
		select {
		case m := <-sub3.msgs:
			got3[string(m.Payload)] = true
		case <-deadline:
			t.Fatalf("node3's subscriber got %d, node1 counted %v dropped for node3: %v of %d unaccounted for", len(got3), dropped, float64(n)-dropped-float64(len(got3)), n)
		}
	}
	t.Logf("node3 got %d after its broker resumed; node1 dropped %v for it, counted (buffer %d)", len(got3), dropped, buffer)
}

// TestMessageSizeLimit (issue 14 §4): the broker refuses a payload larger
// than message_size_limit (an MQTT v5 publisher gets reason 0x95), as one
// broker with that limit does, instead of accepting what could not cross
// a link; a payload at the limit crosses.
func TestMessageSizeLimit(t *testing.T) {
	const limit = 1024
	c := startCluster(t, 2, func(cl *config.Cluster) { cl.MessageSizeLimit = limit })
	sub := connect(t, addr(c, "node2"), "size-sub")
	sub.subscribe("size/#", 1)
	peerKnows(t, c, "node1", "node2", "size/#", true)
	pub := connect(t, addr(c, "node1"), "size-pub")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := pub.pc.Publish(ctx, &paho.Publish{Topic: "size/big", QoS: 1, Payload: make([]byte, limit+1)})
	if err == nil && (res == nil || res.ReasonCode < 0x80) {
		t.Fatalf("a payload over the limit was accepted: %+v", res)
	}
	if res != nil && res.ReasonCode != 0x95 {
		t.Fatalf("refused with reason %#x, want 0x95 (packet too large)", res.ReasonCode)
	}
	pub.publish(&paho.Publish{Topic: "size/fits", QoS: 1, Payload: make([]byte, limit)})
	sub.expectOnly("size/fits", 5*time.Second)
}

// TestAgentStartsBeforeItsBroker: an agent whose broker is not up yet
// keeps trying; once the broker is there the node settles (its table leaves
// the state the failed attempts put it in).
func TestAgentStartsBeforeItsBroker(t *testing.T) {
	c := startCluster(t, 2)
	c.StopAgent("node2")
	c.Broker("node2").Stop(5 * time.Second)
	if err := c.StartAgent(context.Background(), "node2"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "node2's agent to have failed to reach its broker", func() bool {
		return metricSum(t, c.MustNode("node2").HTTP, "moha_broker_session_losses_total") > 0
	})
	if err := c.StartBroker(context.Background(), "node2"); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, c, "node2")
}

// TestPeerReportsBrokerDown (issue 14 §2): node2's broker stops; its agent
// tells node1 at once (BROKER frame), and node1 buffers for node2 as for a
// peer that is down — its publisher's messages are acknowledged without
// waiting for a stall — then sends them when node2's broker is back: the
// persistent subscriber there gets every one.
func TestPeerReportsBrokerDown(t *testing.T) {
	c := startCluster(t, 2, func(cl *config.Cluster) { cl.InterestGrace = config.Duration(time.Minute) })
	sub := connect(t, addr(c, "node2"), "bd-sub", persistent(3600))
	sub.subscribe("bd/#", 1)
	peerKnows(t, c, "node1", "node2", "bd/#", true)
	sub.drop()

	c.Broker("node2").Stop(5 * time.Second)
	waitFor(t, 5*time.Second, "node1 to see node2's broker down", func() bool { return peerStatus(t, c, "node1", "node2").BrokerDown })
	if !peerStatus(t, c, "node1", "node2").Up {
		t.Fatal("the link to node2 is down: the test needs it up, with node2's broker down")
	}
	pub := connect(t, addr(c, "node1"), "bd-pub")
	const n = 50
	for i := range n {
		pub.pub("bd/x", 1, strconv.Itoa(i))
	}
	if got := metricSum(t, c.MustNode("node1").HTTP, "moha_peer_stalls_total"); got != 0 {
		t.Fatalf("node1 counted %v stalls: it waited on node2 instead of buffering", got)
	}
	if err := c.StartBroker(context.Background(), "node2"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "node1 to see node2's broker up", func() bool { return !peerStatus(t, c, "node1", "node2").BrokerDown })
	back := connect(t, addr(c, "node2"), "bd-sub", persistent(3600))
	got := map[string]bool{}
	for _, m := range back.expect(n, 10*time.Second) {
		got[string(m.Payload)] = true
	}
	if len(got) != n {
		t.Fatalf("the subscriber got %d distinct of %d", len(got), n)
	}
}
