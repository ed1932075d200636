package agent_test

import (
	"context"
	"maps"
	"strconv"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/moha-project/moha/internal/config"
	"github.com/moha-project/moha/internal/launch"
	"github.com/moha-project/moha/internal/session"
	"github.com/moha-project/moha/internal/status"
)

// TestAbsentPeer: while a peer's agent is away, messages for its known
// interest are buffered up to the configured size and delivered in order
// when it returns; overflow is counted and visible in /status; a peer away
// longer than the grace period has its interest dropped.
func TestAbsentPeer(t *testing.T) {
	c := startCluster(t, 3, func(c *config.Cluster) {
		c.BufferMessages = 50
		c.InterestGrace = config.Duration(4 * time.Second)
	})
	sub := connect(t, addr(c, "node2"), "ab-sub", persistent(300))
	sub.subscribe("ab/#", 1)
	peerKnows(t, c, "node1", "node2", "ab/#", true)
	pub := connect(t, addr(c, "node1"), "ab-pub")

	c.StopAgent("node2")
	waitFor(t, 5*time.Second, "node1 to see node2's link down", func() bool {
		return !peerStatus(t, c, "node1", "node2").Up
	})
	for i := range 100 {
		pub.pub("ab/x", 1, strconv.Itoa(i))
	}
	waitFor(t, 5*time.Second, "50 buffered and 50 dropped in node1's /status", func() bool {
		p := peerStatus(t, c, "node1", "node2")
		return p.Queued == 50 && p.Dropped == 50
	})
	if n := metricSum(t, c.MustNode("node1").HTTP, "moha_peer_dropped_messages_total"); n != 50 {
		t.Fatalf("dropped metric %v, want 50", n)
	}
	restart(t, c, "node2")
	got := sub.expectTopic("ab/x", 50, 10*time.Second)
	for i, m := range got[:50] {
		if string(m.Payload) != strconv.Itoa(i) {
			t.Fatalf("buffered message %d is %q: not the first 50 in order", i, m.Payload)
		}
	}

	c.StopAgent("node2")
	start := time.Now()
	waitFor(t, 10*time.Second, "node2's interest dropped after the grace period", func() bool {
		p := peerStatus(t, c, "node1", "node2")
		return p.Gone && p.InterestFilters == 0
	})
	if d := time.Since(start); d < 3*time.Second {
		t.Fatalf("interest dropped after %v, before the 4 s grace period", d)
	}
}

func peerStatus(t testing.TB, c *launch.Cluster, at, of string) status.PeerStatus {
	t.Helper()
	for _, p := range agentOf(c, at).Status().Peers {
		if p.Name == of {
			return p
		}
	}
	t.Fatalf("%s has no peer %s", at, of)
	return status.PeerStatus{}
}

// TestBrokerRestartRecovers: the broker restarts (persistence on): clean
// sessions vanish without a log line, persistent ones are restored without
// one. The agent over-states meanwhile and recovers once the broker's count
// proves the picture, and forwarding to the restored session resumes.
func TestBrokerRestartRecovers(t *testing.T) {
	c := startCluster(t, 2)
	clean := connect(t, addr(c, "node2"), "br-clean")
	clean.subscribe("br/clean", 1)
	pers := connect(t, addr(c, "node2"), "br-pers", persistent(3600))
	pers.subscribe("br/pers", 1)
	peerKnows(t, c, "node1", "node2", "br/clean", true)

	c.Broker("node2").Stop(5 * time.Second)
	if err := c.StartBroker(context.Background(), "node2"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitSettled(t, c, "node2")
	t.Logf("node2 settled %v after its broker restarted", time.Since(start).Round(10*time.Millisecond))
	peerKnows(t, c, "node1", "node2", "br/clean", false)
	peerKnows(t, c, "node1", "node2", "br/pers", true)
	connect(t, addr(c, "node1"), "br-pub").pub("br/pers", 1, "after restart")
	back := connect(t, addr(c, "node2"), "br-pers", persistent(3600))
	if got := back.expect(1, 5*time.Second); string(got[0].Payload) != "after restart" {
		t.Fatalf("got %q", got[0].Payload)
	}
}

// TestRetainedAntiEntropy: a node that was away past the grace period (its
// buffer dropped) gets, when its link returns, exactly the retained messages
// it lacks — new ones and a deletion — and nothing it already has.
func TestRetainedAntiEntropy(t *testing.T) {
	c := startCluster(t, 3, func(c *config.Cluster) {
		c.InterestGrace = config.Duration(2 * time.Second)
	})
	pub := connect(t, addr(c, "node1"), "ae-pub")
	retain := func(topic, payload string) {
		pub.publish(&paho.Publish{Topic: topic, QoS: 1, Retain: true, Payload: []byte(payload)})
	}
	retain("ae/same", "kept")
	retain("ae/both", "to be deleted")
	held := func(node string) map[string]string { return retainedOn(t, c, node, "ae/#") }
	waitFor(t, 5*time.Second, "both retained messages on node2", func() bool { return len(held("node2")) == 2 })

	c.StopAgent("node2")
	waitFor(t, 10*time.Second, "node2 gone for node1", func() bool { return peerStatus(t, c, "node1", "node2").Gone })
	for i := range 5 {
		retain("ae/new"+strconv.Itoa(i), "v"+strconv.Itoa(i))
	}
	retain("ae/both", "") // a deletion
	want := map[string]string{"ae/same": "kept", "ae/new0": "v0", "ae/new1": "v1", "ae/new2": "v2", "ae/new3": "v3", "ae/new4": "v4"}
	// No data subscription matches these topics (no interest anywhere): the
	// writes are found by a rescan, within a few seconds.
	waitFor(t, 10*time.Second, "node3 to hold what node1 holds", func() bool { return maps.Equal(held("node3"), want) })
	live := connect(t, addr(c, "node2"), "ae-live")
	// Retain handling 2: only what is published from now on, not what is held.
	if _, err := live.pc.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "ae/#", QoS: 1, RetainHandling: 2}}}); err != nil {
		t.Fatal(err)
	}
	restart(t, c, "node2")
	waitFor(t, 10*time.Second, "node2 to hold what node1 holds", func() bool {
		got := held("node2")
		if !maps.Equal(got, want) {
			t.Logf("node2 holds %v", got)
			return false
		}
		return true
	})
	// node2's digest reaches node1 and node3 as its links come up: the
	// first to answer sends all 6; the other sends what node2 still lacked
	// when it wrote that digest — never more than 6.
	most := 0.0
	for _, n := range []string{"node1", "node3"} {
		got := metricSum(t, c.MustNode(n).HTTP, "moha_retained_synced_total")
		if got > 6 {
			t.Fatalf("%s sent %v retained messages, node2 lacked 6", n, got)
		}
		most = max(most, got)
	}
	if most != 6 {
		t.Fatalf("neither peer sent node2 the 6 retained messages it lacked (most: %v)", most)
	}
	if n := metricSum(t, c.MustNode("node2").HTTP, "moha_retained_synced_total"); n != 0 {
		t.Fatalf("node2 sent %v retained messages, its peers lacked none", n)
	}
	seen := map[string]int{}
	for _, m := range live.expect(6, 5*time.Second) {
		seen[m.Topic]++
	}
	live.subscribe("ae-live-end", 1)
	connect(t, addr(c, "node2"), "ae-live-end-pub").pub("ae-live-end", 1, "end")
	for _, m := range live.expect(1, 5*time.Second) {
		seen[m.Topic]++
	}
	for topic, n := range seen {
		if n != 1 {
			t.Fatalf("live subscriber got %s %d times: %v", topic, n, seen)
		}
	}
}

// TestDrainedReplayIsNotAWrite: a run of node2's agent stops after its
// broker replayed a retained message to the data session but before it was
// taken; the message waits in the persistent session. Meanwhile node1
// deletes it. The next run drains that session: the replay is not a new
// write (stamped then, it would beat the deletion and bring the message
// back on every node); the deletion wins everywhere.
func TestDrainedReplayIsNotAWrite(t *testing.T) {
	c := startCluster(t, 2)
	pub := connect(t, addr(c, "node1"), "dr-pub")
	pub.publish(&paho.Publish{Topic: "dr/t", QoS: 1, Retain: true, Payload: []byte("old")})
	held := func(node string) map[string]string { return retainedOn(t, c, node, "dr/#") }
	waitFor(t, 5*time.Second, "the retained message on node2", func() bool { return held("node2")["dr/t"] == "old" })
	dataID := agentOf(c, "node2").Status().Data.ClientID
	c.StopAgent("node2")

	// What a run stopped at that moment leaves: a replay subscription
	// (odd identifier) whose retained message was delivered, not acked.
	replayed := make(chan struct{}, 1)
	cfg := session.Config{Addr: addr(c, "node2"), ClientID: dataID, SessionExpiry: 3600}
	s, err := session.Dial(context.Background(), cfg, func(d *session.Delivery) {
		if d.Message.Topic == "dr/t" {
			replayed <- struct{}{} // and never acked
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if !s.SessionPresent() {
		t.Fatal("node2's data session is not present")
	}
	if err := s.Subscribe(context.Background(), session.Subscription{Filter: "dr/t", QoS: 1, RetainAsPublished: true, ID: 1}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-replayed:
	case <-time.After(5 * time.Second):
		t.Fatal("no replay of the retained message")
	}
	s.Close()

	pub.publish(&paho.Publish{Topic: "dr/t", QoS: 1, Retain: true}) // the deletion, buffered for node2
	restart(t, c, "node2")
	waitSettled(t, c, "node2")
	waitFor(t, 5*time.Second, "the deletion on node2", func() bool { return len(held("node2")) == 0 })
	agentsIdle(t, c)
	for _, n := range []string{"node1", "node2"} {
		if got := held(n); len(got) != 0 {
			t.Fatalf("%s holds %v after the deletion: the drained replay came back as a write", n, got)
		}
	}
}

// TestRetainedRewriteNobodyWants: retained topics nobody subscribes to
// are written, then written again: the other node receives both writes, in
// either data subscription mode (with no interest changing in between,
// which would make the data session subscribe again). With all the data
// session holds "#" alone however many topics hold a retained message, and
// the broker's retained count changing starts no rescan.
func TestRetainedRewriteNobodyWants(t *testing.T) {
	for _, mode := range []string{config.DataSubscriptionInterest, config.DataSubscriptionAll} {
		t.Run(mode, func(t *testing.T) {
			c := startCluster(t, 2, func(cl *config.Cluster) { cl.DataSubscription = mode })
			pub := connect(t, addr(c, "node1"), "rw-pub")
			write := func(v string) {
				for i := range 20 {
					pub.publish(&paho.Publish{Topic: "rw/" + strconv.Itoa(i), QoS: 1, Retain: true, Payload: []byte(v)})
				}
			}
			received := func(n float64) func() bool {
				return func() bool { return metricSum(t, c.MustNode("node2").HTTP, "moha_inbound_messages_total") == n }
			}
			write("v1")
			waitFor(t, 10*time.Second, "node2 to receive the first writes", received(20))
			rescans := metricSum(t, c.MustNode("node1").HTTP, "moha_retained_rescans_total")
			write("v2")
			waitFor(t, 10*time.Second, "node2 to receive the second writes", received(40))
			got := retainedOn(t, c, "node2", "rw/#")
			for i := range 20 {
				if v := got["rw/"+strconv.Itoa(i)]; v != "v2" {
					t.Fatalf("node2 holds %q for rw/%d, want v2", v, i)
				}
			}
			if mode != config.DataSubscriptionAll {
				return
			}
			if n := metricSum(t, c.MustNode("node1").HTTP, "moha_data_subscriptions"); n != 1 {
				t.Fatalf("node1's data session holds %v filters, want # alone", n)
			}
			if n := metricSum(t, c.MustNode("node1").HTTP, "moha_retained_rescans_total"); n != rescans {
				t.Fatalf("node1 rescanned its broker %v times after the first writes, want none", n-rescans)
			}
		})
	}
}
