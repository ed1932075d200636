package agent_test

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moha-project/moha/internal/config"
	"github.com/moha-project/moha/internal/launch"
)

// addr returns node's broker address.
func addr(c *launch.Cluster, node string) string { return c.MustNode(node).Broker.Address }

// TestWildcardsAcrossNodes: a message published on one node reaches every
// matching subscriber on the others, for exact, + and # filters, and a/#
// matches a [MQTT-4.7.1-2].
func TestWildcardsAcrossNodes(t *testing.T) {
	c := startCluster(t, 2)
	cases := []struct {
		filter string
		match  []string
		miss   []string
	}{
		{"ex/a/b", []string{"ex/a/b"}, []string{"ex/a", "ex/a/b/c"}},
		{"pl/+/x", []string{"pl/1/x", "pl//x"}, []string{"pl/1/y", "pl/1/2/x"}},
		{"hs/#", []string{"hs", "hs/1", "hs/1/2/3"}, []string{"hsx", "other"}},
		{"+/plus/#", []string{"z/plus", "z/plus/q"}, []string{"plus/z"}},
	}
	for i, tc := range cases {
		t.Run(tc.filter, func(t *testing.T) {
			sub := connect(t, addr(c, "node2"), "sub-wc-"+strconv.Itoa(i))
			sub.subscribe(tc.filter, 1)
			peerKnows(t, c, "node1", "node2", tc.filter, true)
			pub := connect(t, addr(c, "node1"), "pub-wc-"+strconv.Itoa(i))
			for _, topic := range tc.miss {
				pub.pub(topic, 1, "miss")
			}
			for _, topic := range tc.match {
				pub.pub(topic, 1, "hit")
			}
			got := sub.expect(len(tc.match), 5*time.Second)
			if !slices.Equal(topics(got), tc.match) {
				t.Fatalf("got %v, want %v", topics(got), tc.match)
			}
			sub.unsubscribe(tc.filter)
			peerKnows(t, c, "node1", "node2", tc.filter, false)
		})
	}
}

// TestOverlappingFilters: an MQTT v5 client with two matching subscriptions
// gets one copy per subscription, as from a single Mosquitto — never more
// because the message crossed nodes.
func TestOverlappingFilters(t *testing.T) {
	c := startCluster(t, 2)
	sub := connect(t, addr(c, "node2"), "sub-overlap")
	sub.subscribe("ov/+", 1)
	sub.subscribe("ov/#", 1)
	peerKnows(t, c, "node1", "node2", "ov/#", true)
	pub := connect(t, addr(c, "node1"), "pub-overlap")
	pub.pub("ov/x", 1, "one")
	pub.pub("ov/end/marker", 1, "marker")
	got := sub.expect(3, 5*time.Second) // two copies of ov/x, one of the marker (only ov/# matches it)
	if n := countTopic(got, "ov/x"); n != 2 {
		t.Fatalf("got %d copies of ov/x, want 2 (one per subscription): %v", n, topics(got))
	}
}

func countTopic(ms []*paho.Publish, topic string) int {
	n := 0
	for _, m := range ms {
		if m.Topic == topic {
			n++
		}
	}
	return n
}

// TestNotSentWithoutInterest: messages nobody on a peer wants do not cross.
// With data_subscription interest the broker does not even hand them to
// the agent, whose data session subscribes only to what peers need; with
// all (the default) the agent reads them, for its replay history.
func TestNotSentWithoutInterest(t *testing.T) {
	for _, mode := range []string{config.DataSubscriptionInterest, config.DataSubscriptionAll} {
		t.Run(mode, func(t *testing.T) {
			c := startCluster(t, 2, func(cl *config.Cluster) { cl.DataSubscription = mode })
			notSentWithoutInterest(t, c, mode == config.DataSubscriptionAll)
		})
	}
}

func notSentWithoutInterest(t *testing.T, c *launch.Cluster, readsAll bool) {
	a1 := agentOf(c, "node1")
	local := func() float64 { return testutil.ToFloat64(a1.Metrics().Local) }
	targeted := func() float64 {
		return testutil.ToFloat64(a1.Metrics().Targeted.WithLabelValues("node2"))
	}
	sub := connect(t, addr(c, "node2"), "sub-skip")
	connect(t, addr(c, "node2"), "sys-skip").subscribe("$SYS/broker/uptime", 0) // the broker's own: never crosses
	sub.subscribe("wanted/#", 1)
	peerKnows(t, c, "node1", "node2", "wanted/#", true)
	held := "wanted/#"
	if readsAll {
		held = "#"
	}
	waitFor(t, 5*time.Second, "node1's data session to hold "+held+" alone", func() bool {
		return metricSum(t, c.MustNode("node1").HTTP, "moha_data_subscriptions") == 1
	})
	local0, tgt0 := local(), targeted()
	pub := connect(t, addr(c, "node1"), "pub-skip")
	for i := range 50 {
		pub.pub("unwanted/"+strconv.Itoa(i), 1, "x")
	}
	pub.pub("wanted/marker", 1, "m")
	sub.expectOnly("wanted/marker", 5*time.Second)
	wantRead := 1.0
	if readsAll {
		wantRead = 51
	}
	if d := local() - local0; d != wantRead {
		t.Fatalf("node1's agent read %v messages from its broker, want %v", d, wantRead)
	}
	// node2's interest in a $SYS topic came before wanted/#, which is held.
	if n := metricSum(t, c.MustNode("node1").HTTP, "moha_data_subscriptions"); n != 1 {
		t.Fatalf("node1's data session holds %v filters, want %s alone", n, held)
	}
	if d := targeted() - tgt0; d != 1 {
		t.Fatalf("sent %v messages to node2, want 1", d)
	}
}

// TestFanOutThreeNodes: 200 messages from node1 reach subscribers on all
// three nodes exactly once each, in order: no loops, no duplicates.
func TestFanOutThreeNodes(t *testing.T) {
	c := startCluster(t, 3)
	var subs []*client
	for _, n := range []string{"node1", "node2", "node3"} {
		s := connect(t, addr(c, n), "fan-"+n)
		s.subscribe("fan/#", 1)
		subs = append(subs, s)
	}
	peerKnows(t, c, "node1", "node2", "fan/#", true)
	peerKnows(t, c, "node1", "node3", "fan/#", true)
	pub := connect(t, addr(c, "node1"), "fan-pub")
	for i := range 200 {
		pub.pub("fan/t", 1, strconv.Itoa(i))
	}
	pub.pub("fan/end", 1, "end")
	for _, s := range subs {
		got := s.expect(201, 10*time.Second)
		for i := range 200 {
			if string(got[i].Payload) != strconv.Itoa(i) {
				t.Fatalf("%s: message %d is %q, want %d (order or duplicate)", s.id, i, got[i].Payload, i)
			}
		}
		if got[200].Topic != "fan/end" {
			t.Fatalf("%s: extra message %q before the end marker", s.id, got[200].Payload)
		}
		select {
		case m := <-s.msgs:
			t.Fatalf("%s: duplicate after the end: %q %q", s.id, m.Topic, m.Payload)
		default:
		}
	}
}

// TestQoSAndProperties: QoS 1 and 2 arrive at the QoS a single broker would
// give, and MQTT v5 properties survive the hop.
func TestQoSAndProperties(t *testing.T) {
	c := startCluster(t, 2)
	sub2 := connect(t, addr(c, "node2"), "sub-qos2")
	sub2.subscribe("q/#", 2)
	sub1 := connect(t, addr(c, "node2"), "sub-qos1")
	sub1.subscribe("q/#", 1)
	peerKnows(t, c, "node1", "node2", "q/#", true)
	pub := connect(t, addr(c, "node1"), "pub-qos")
	expiry := uint32(300)
	format := byte(1)
	pub.publish(&paho.Publish{Topic: "q/two", QoS: 2, Payload: []byte("p2"), Properties: &paho.PublishProperties{
		ContentType: "text/plain", ResponseTopic: "q/reply", CorrelationData: []byte{1, 2, 3},
		MessageExpiry: &expiry, PayloadFormat: &format,
		User: paho.UserProperties{{Key: "k", Value: "v1"}, {Key: "k", Value: "v2"}, {Key: "other", Value: "x"}},
	}})
	pub.pub("q/one", 1, "p1")
	pub.pub("q/zero", 0, "p0")
	want2 := map[string]byte{"q/two": 2, "q/one": 1, "q/zero": 0}
	want1 := map[string]byte{"q/two": 1, "q/one": 1, "q/zero": 0}
	for s, want := range map[*client]map[string]byte{sub2: want2, sub1: want1} {
		got := s.expect(3, 5*time.Second)
		for _, m := range got {
			if m.QoS != want[m.Topic] {
				t.Errorf("%s: %s arrived at QoS %d, want %d", s.id, m.Topic, m.QoS, want[m.Topic])
			}
			if m.Topic != "q/two" {
				continue
			}
			p := m.Properties
			if p == nil || p.ContentType != "text/plain" || p.ResponseTopic != "q/reply" ||
				!bytes.Equal(p.CorrelationData, []byte{1, 2, 3}) || p.PayloadFormat == nil || *p.PayloadFormat != 1 ||
				p.MessageExpiry == nil || *p.MessageExpiry > 300 || *p.MessageExpiry < 290 {
				t.Errorf("%s: properties not kept: %+v", s.id, p)
			}
			if p != nil && fmt.Sprint(p.User) != fmt.Sprint(paho.UserProperties{{Key: "k", Value: "v1"}, {Key: "k", Value: "v2"}, {Key: "other", Value: "x"}}) {
				t.Errorf("%s: user properties %v", s.id, p.User)
			}
		}
	}
}

// TestAtLeastOnceAcrossNodes: 5000 QoS 1 messages, none lost; and QoS 2
// beyond the broker's Receive Maximum (max_inflight_messages 1000 as
// rendered) all arrive.
func TestAtLeastOnceAcrossNodes(t *testing.T) {
	c := startCluster(t, 2)
	sub := connect(t, addr(c, "node2"), "sub-bulk")
	sub.subscribe("bulk/+", 2)
	peerKnows(t, c, "node1", "node2", "bulk/+", true)
	pubs := []*client{connect(t, addr(c, "node1"), "pub-bulk-1"), connect(t, addr(c, "node1"), "pub-bulk-2")}
	done := make(chan struct{})
	for i, p := range pubs {
		go func() {
			defer func() { done <- struct{}{} }()
			for j := range 2500 {
				p.pub("bulk/"+strconv.Itoa(i), 1, strconv.Itoa(j))
			}
		}()
	}
	got := sub.expect(5000, 60*time.Second)
	<-done
	<-done
	seen := map[string]bool{}
	for _, m := range got {
		seen[m.Topic+"/"+string(m.Payload)] = true
	}
	if len(seen) != 5000 {
		t.Fatalf("distinct messages %d, want 5000", len(seen))
	}
	// QoS 2: 1040 back to back from several publishers, more than the 1000
	// the broker lets the republishing agent keep in flight.
	sub.subscribe("q2/+", 2)
	peerKnows(t, c, "node1", "node2", "q2/+", true)
	for i := range 4 {
		p := connect(t, addr(c, "node1"), "pub-q2-"+strconv.Itoa(i))
		go func() {
			for j := range 260 {
				p.pub("q2/"+strconv.Itoa(i), 2, strconv.Itoa(j))
			}
		}()
	}
	got = sub.expect(1040, 30*time.Second)
	for _, m := range got {
		if m.QoS != 2 {
			t.Fatalf("QoS 2 message arrived at QoS %d", m.QoS)
		}
	}
}

// TestRetainedEverywhere: a retained message published on one node is there
// for a later subscriber on every node; an empty retained publish deletes it
// everywhere.
func TestRetainedEverywhere(t *testing.T) {
	c := startCluster(t, 3)
	pub := connect(t, addr(c, "node1"), "pub-ret")
	pub.publish(&paho.Publish{Topic: "ret/a", QoS: 1, Retain: true, Payload: []byte("kept")})
	// A marker published by a client on the subscriber's own node arrives
	// after any retained message the subscription brought.
	probe := func(n string) *paho.Publish {
		id := "late-" + n + strconv.FormatInt(time.Now().UnixNano(), 10)
		s := connect(t, addr(c, n), id)
		defer s.disconnect()
		s.subscribe("ret/#", 1)
		s.subscribe(id, 1)
		connect(t, addr(c, n), id+"-m").pub(id, 1, "marker")
		return s.expect(1, 5*time.Second)[0]
	}
	for _, n := range []string{"node2", "node3"} {
		waitFor(t, 5*time.Second, "retained on "+n, func() bool {
			m := probe(n)
			return m.Topic == "ret/a" && string(m.Payload) == "kept" && m.Retain
		})
	}
	pub.publish(&paho.Publish{Topic: "ret/a", QoS: 1, Retain: true, Payload: nil})
	for _, n := range []string{"node2", "node3"} {
		waitFor(t, 5*time.Second, "retained deleted on "+n, func() bool {
			return probe(n).Topic != "ret/a"
		})
	}
}

// TestWillAcrossNodes: a will published by one node reaches subscribers on
// another.
func TestWillAcrossNodes(t *testing.T) {
	c := startCluster(t, 2)
	sub := connect(t, addr(c, "node2"), "sub-will")
	sub.subscribe("wills/#", 1)
	peerKnows(t, c, "node1", "node2", "wills/#", true)
	dying := connect(t, addr(c, "node1"), "dying", will("wills/dying", []byte("gone")))
	dying.drop()
	got := sub.expect(1, 5*time.Second)
	if got[0].Topic != "wills/dying" || string(got[0].Payload) != "gone" {
		t.Fatalf("got %q %q, want the will", got[0].Topic, got[0].Payload)
	}
}

// TestNothingInternalVisible: a client subscribed to # on any node sees
// exactly what clients published, once: the agents add nothing.
func TestNothingInternalVisible(t *testing.T) {
	c := startCluster(t, 3)
	var watchers []*client
	for _, n := range []string{"node1", "node2", "node3"} {
		w := connect(t, addr(c, n), "watch-"+n)
		w.subscribe("#", 1)
		watchers = append(watchers, w)
	}
	peerKnows(t, c, "node1", "node3", "#", true)
	peerKnows(t, c, "node2", "node3", "#", true)
	peerKnows(t, c, "node3", "node1", "#", true)
	pub := connect(t, addr(c, "node2"), "pub-vis")
	for i := range 10 {
		pub.pub("vis/"+strconv.Itoa(i), 1, "x")
	}
	pub.pub("vis/end", 1, "end")
	for _, w := range watchers {
		got := w.expect(11, 5*time.Second)
		for i, m := range got[:10] {
			if m.Topic != "vis/"+strconv.Itoa(i) {
				t.Fatalf("%s saw %q, want only client messages in order", w.id, m.Topic)
			}
		}
		if got[10].Topic != "vis/end" {
			t.Fatalf("%s: extra message %q", w.id, got[10].Topic)
		}
	}
}

// TestRetainedConverges: two nodes receive retained writes to the same
// topics at the same moment (200 topics, each written once on each node in
// overlapping bursts); afterwards every node holds the same value for every
// topic (last writer wins by the origin's timestamp).
func TestRetainedConverges(t *testing.T) {
	c := startCluster(t, 3)
	pubs := []*client{connect(t, addr(c, "node1"), "lww-1"), connect(t, addr(c, "node2"), "lww-2")}
	const topics = 200
	start := make(chan struct{})
	done := make(chan struct{})
	for i, p := range pubs {
		go func() {
			defer func() { done <- struct{}{} }()
			<-start
			for k := range topics {
				p.publish(&paho.Publish{Topic: "lww/" + strconv.Itoa(k), QoS: 1, Retain: true, Payload: []byte(strconv.Itoa(i))})
			}
		}()
	}
	close(start)
	<-done
	<-done
	read := func(n string) map[string]string { return retainedOn(t, c, n, "lww/#") }
	// Convergence is checked until a deadline; a failure names the topics
	// that still differ, so a divergence can be told from a slow machine.
	var differ []string
	deadline := time.Now().Add(20 * time.Second)
	for {
		v1, v2, v3 := read("node1"), read("node2"), read("node3")
		differ = differ[:0]
		for k := range topics {
			topic := "lww/" + strconv.Itoa(k)
			if v1[topic] != v2[topic] || v2[topic] != v3[topic] || v1[topic] == "" {
				differ = append(differ, fmt.Sprintf("%s=%q/%q/%q", topic, v1[topic], v2[topic], v3[topic]))
			}
		}
		if len(differ) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d topics still differ after 20 s (node1/node2/node3): %v", len(differ), differ[:min(10, len(differ))])
		}
	}
}
