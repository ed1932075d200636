package agent_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moha-project/moha/internal/datasub"
)

// TestDenseInterestAggregated: a client on node2 subscribes to more exact
// devices/<i>/cmd filters than the aggregation threshold. node1's data
// session (data_subscription interest) holds devices/+/cmd in their place,
// and routing stays exact: a message on a subscribed topic reaches node2
// once, one on a topic nobody subscribed to reaches the data session (the
// over-statement, counted unrouted) but not node2.
func TestDenseInterestAggregated(t *testing.T) {
	c := startCluster(t, 2, followInterest)
	const n = datasub.AggregateMin + 44
	sub := connect(t, addr(c, "node2"), "agg-sub")
	subscribeMany(t, sub, "devices/%d/cmd", n)
	peerKnows(t, c, "node1", "node2", fmt.Sprintf("devices/%d/cmd", n-1), true)

	a1 := agentOf(c, "node1")
	waitFor(t, 10*time.Second, "node1's data session to hold devices/+/cmd alone", func() bool {
		d := a1.Status().Data
		return d.Current && d.Filters == 1 && d.AggregatedWildcards == 1 && d.AggregatedFilters == n
	})
	http1 := c.MustNode("node1").HTTP
	if w, f := metricSum(t, http1, "moha_data_aggregated_wildcards"), metricSum(t, http1, "moha_data_aggregated_filters"); w != 1 || f != n {
		t.Fatalf("metrics: %v aggregated wildcards for %v filters, want 1 for %d", w, f, n)
	}

	pub := connect(t, addr(c, "node1"), "agg-pub")
	pub.pub("devices/7/cmd", 1, "seven")
	if got := sub.expect(1, 5*time.Second); got[0].Topic != "devices/7/cmd" || string(got[0].Payload) != "seven" {
		t.Fatalf("got %q on %q, want seven on devices/7/cmd", got[0].Payload, got[0].Topic)
	}
	pub.pub("devices/8/cmd", 1, "after seven")
	sub.expectOnly("devices/8/cmd", 5*time.Second) // no second copy of seven

	unrouted := func() float64 { return metricSum(t, http1, "moha_unrouted_messages_total") }
	targeted := func() float64 { return testutil.ToFloat64(a1.Metrics().Targeted.WithLabelValues("node2")) }
	inbound := func() float64 { return metricSum(t, c.MustNode("node2").HTTP, "moha_inbound_messages_total") }
	agentsIdle(t, c) // node2 counts a message once its broker took it: after the subscriber may see it
	unrouted0, targeted0, inbound0 := unrouted(), targeted(), inbound()
	pub.pub(fmt.Sprintf("devices/%d/cmd", 999999), 1, "nobody")
	pub.pub("devices/9/cmd", 1, "marker")
	sub.expectOnly("devices/9/cmd", 5*time.Second)
	// node1's forwarding loop takes its messages in order: the unwanted
	// one was decided before the marker was sent.
	if d := targeted() - targeted0; d != 1 {
		t.Fatalf("node1 sent %v messages to node2, want the marker alone", d)
	}
	waitFor(t, 5*time.Second, "node2 to count the marker", func() bool { return inbound() > inbound0 })
	agentsIdle(t, c)
	if d := inbound() - inbound0; d != 1 {
		t.Fatalf("node2 received %v messages, want the marker alone", d)
	}
	if d := unrouted() - unrouted0; d != 1 {
		t.Fatalf("node1 counted %v unrouted messages, want 1 (devices/999999/cmd, which the wildcard brought)", d)
	}
}

// subscribeMany subscribes c to n filters made from format and 0…n-1, in
// one SUBSCRIBE.
func subscribeMany(t *testing.T, c *client, format string, n int) {
	t.Helper()
	subs := make([]paho.SubscribeOptions, n)
	for i := range subs {
		subs[i] = paho.SubscribeOptions{Topic: fmt.Sprintf(format, i), QoS: 1}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sa, err := c.pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs})
	if err != nil {
		t.Fatalf("subscribe %d filters: %v", n, err)
	}
	for i, r := range sa.Reasons {
		if r >= 0x80 {
			t.Fatalf("subscribe %s refused: %d", subs[i].Topic, r)
		}
	}
}
