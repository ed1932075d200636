package agent_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/moha-project/moha/internal/agent"
)

// TestInterestChurnOneCopy: while a peer's interest churns through
// overlapping filters, so that node1's data session subscribes and
// unsubscribes them under load, a steady subscriber on node2 gets every
// message exactly once. (With data_subscription interest: under all the
// data session holds "#" whatever peers want.)
func TestInterestChurnOneCopy(t *testing.T) {
	c := startCluster(t, 2, followInterest)
	steady := connect(t, addr(c, "node2"), "churn-steady")
	steady.subscribe("ch/+/x", 1)
	peerKnows(t, c, "node1", "node2", "ch/+/x", true)

	churner := connect(t, addr(c, "node2"), "churn-churner")
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		filters := []string{"ch/#", "+/a/x", "ch/a/+", "ch/a/x", "#", "+/+/+"}
		ctx := context.Background()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			sub := &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filters[i%len(filters)], QoS: 1}}}
			if _, err := churner.pc.Subscribe(ctx, sub); err != nil {
				return
			}
			if _, err := churner.pc.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{filters[(i+3)%len(filters)]}}); err != nil {
				return
			}
		}
	}()
	pub := connect(t, addr(c, "node1"), "churn-pub")
	const n = 3000
	for i := range n {
		pub.pub("ch/a/x", 1, strconv.Itoa(i))
	}
	close(stop)
	<-done
	pub.pub("ch/end/x", 1, "end")

	seen := map[string]int{}
	deadline := time.After(30 * time.Second)
	for seen["end"] == 0 {
		select {
		case m := <-steady.msgs:
			seen[string(m.Payload)]++
		case <-deadline:
			t.Fatalf("the end marker did not arrive; %d distinct messages did", len(seen))
		}
	}
	for i := range n {
		if k := seen[strconv.Itoa(i)]; k != 1 {
			t.Errorf("message %d arrived %d times, want once", i, k)
		}
	}
	if extra := metricSum(t, c.MustNode("node1").HTTP, "moha_data_extra_copies_total"); extra == 0 {
		t.Error("no extra copy was dropped: the filters never overlapped, the test proves nothing")
	}
}

// TestRestartDrainsBothLeftSessions: an agent that finds both of its data
// client ids holding a session (an earlier run stopped mid-drain) takes
// what each queued, ends them, and settles with one data session.
func TestRestartDrainsBothLeftSessions(t *testing.T) {
	c := startCluster(t, 2)
	sub := connect(t, addr(c, "node2"), "both-sub", persistent(300))
	sub.subscribe("both/#", 1)
	peerKnows(t, c, "node1", "node2", "both/#", true)
	live := agentOf(c, "node1").Status().Data.ClientID
	ids := agentOf(c, "node1").ClientIDs()
	c.StopAgent("node1")
	// The other id gets a session too, subscribed like a data session.
	other := ids[agent.RoleData]
	if live == other {
		other = ids[agent.RoleDataB]
	}
	left := connect(t, addr(c, "node1"), other, persistent(300))
	left.subscribe("both/#", 2)
	left.disconnect()

	pub := connect(t, addr(c, "node1"), "both-pub")
	for i := range 50 {
		pub.pub("both/down", 1, strconv.Itoa(i))
	}
	restart(t, c, "node1")
	checkSequence(t, sub.expectTopic("both/down", 50, 10*time.Second), 50)
	waitSettled(t, c, "node1") // the broker's count: no session left holding unknown filters
	if n := metricSum(t, c.MustNode("node1").HTTP, "moha_drained_messages_total"); n < 50 {
		t.Errorf("drained %v messages, want the 50 queued at least", n)
	}
}
