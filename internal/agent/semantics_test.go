package agent_test

import (
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/moha-project/moha/internal/launch"
)

// These tests hold the cluster to what one Mosquitto gives a client: each
// scenario runs twice, once with every client on node1 (one broker, the
// reference) and once with the publisher on node2, and both runs must give
// the subscriber the same messages.

// offlineV5 is one way an MQTT v5 client leaves a session behind with a
// clean start: how it connects, how it disconnects, and how long it stays
// away before it comes back with clean start 0.
type offlineV5 struct {
	name       string
	connect    []clientOpt
	disconnect *paho.Disconnect
	away       time.Duration // after the publishes, before the reconnect
}

func expiry(s uint32) *uint32 { return &s }

func cleanStartExpiry(s uint32) clientOpt {
	return func(c *paho.Connect) {
		c.CleanStart = true
		c.Properties = &paho.ConnectProperties{SessionExpiryInterval: expiry(s)}
	}
}

// TestOfflineV5CleanStartSession: an MQTT v5 session opened with clean start
// 1 and a session expiry lives on after DISCONNECT, and the broker queues
// QoS 1/2 messages for it. Published on another node while its client is
// offline, they must reach it on reconnect as on one broker: session
// present, the same messages, expired ones not delivered, the others with
// what remains of their expiry.
func TestOfflineV5CleanStartSession(t *testing.T) {
	c := startCluster(t, 2)
	ways := []offlineV5{
		{name: "expiry on connect", connect: []clientOpt{cleanStartExpiry(99999)}},
		{
			name:       "expiry raised on disconnect",
			connect:    []clientOpt{cleanStartExpiry(1)},
			disconnect: &paho.Disconnect{Properties: &paho.DisconnectProperties{SessionExpiryInterval: expiry(99999)}},
			away:       2500 * time.Millisecond, // past the connect's expiry
		},
	}
	for i, way := range ways {
		t.Run(way.name, func(t *testing.T) {
			var runs [2][]string
			for j, pubNode := range []string{"node1", "node2"} {
				id := "v5off-" + strconv.Itoa(i) + "-" + strconv.Itoa(j)
				runs[j] = runOfflineV5(t, c, way, id, pubNode)
			}
			if len(runs[0]) < 3 { // qos1, qos2, lasts
				t.Fatalf("one broker gave %v: the scenario does not exercise the queue", runs[0])
			}
			if !slices.Equal(runs[0], runs[1]) {
				t.Fatalf("published on another node the subscriber got %v, one broker gives %v", runs[1], runs[0])
			}
		})
	}
}

// runOfflineV5 leaves an offline v5 session on node1, publishes to it from
// pubNode (QoS 0, 1, 2; one QoS 1 message that expires while queued and one
// that does not), reconnects with clean start 0 and returns what arrives,
// sorted. A message that arrives with more expiry left than it was given
// fails the test.
func runOfflineV5(t *testing.T, c *launch.Cluster, way offlineV5, id, pubNode string) []string {
	t.Helper()
	sub := connect(t, addr(c, "node1"), id, way.connect...)
	sub.subscribe(id+"/+", 2)
	if way.disconnect != nil {
		_ = sub.pc.Disconnect(way.disconnect)
	} else {
		sub.disconnect()
	}
	settleOnPeers(t, c, "node1", id)

	pub := connect(t, addr(c, pubNode), id+"-pub")
	for qos := range byte(3) {
		pub.pub(id+"/q"+strconv.Itoa(int(qos)), qos, "qos"+strconv.Itoa(int(qos)))
	}
	pub.publish(&paho.Publish{Topic: id + "/short", QoS: 1, Payload: []byte("expires"),
		Properties: &paho.PublishProperties{MessageExpiry: expiry(1)}})
	pub.publish(&paho.Publish{Topic: id + "/long", QoS: 1, Payload: []byte("lasts"),
		Properties: &paho.PublishProperties{MessageExpiry: expiry(300)}})
	pub.pub(id+"/end", 1, "end") // queued behind the others, in order
	// Time passing is the behaviour under test: the short message expires.
	time.Sleep(max(way.away, 2500*time.Millisecond)) // the broker counts whole seconds

	back := connect(t, addr(c, "node1"), id, persistent(99999))
	if !back.sessionPresent {
		t.Fatalf("%s (publisher on %s): session present = 0 on reconnect", id, pubNode)
	}
	var got []string
	for {
		m := back.expect(1, 5*time.Second)[0]
		if string(m.Payload) == "end" {
			break
		}
		if m.Properties != nil && m.Properties.MessageExpiry != nil && *m.Properties.MessageExpiry >= 300 {
			t.Errorf("%q arrived with %d s of expiry left, more than it can have after waiting", m.Payload, *m.Properties.MessageExpiry)
		}
		got = append(got, string(m.Payload))
	}
	slices.Sort(got)
	return got
}

// settleOnPeers waits until every peer of node has seen the interest change
// of everything node's broker logged so far: a client subscribes a fresh
// filter on node, and the peers learn of it after the earlier changes,
// since a link carries interest changes in order.
func settleOnPeers(t testing.TB, c *launch.Cluster, node, id string) {
	t.Helper()
	probe := connect(t, addr(c, node), id+"-probe")
	probe.subscribe(id+"-probe/x", 0)
	for _, n := range c.Config.Nodes {
		if n.Name != node {
			peerKnows(t, c, n.Name, node, id+"-probe/x", true)
		}
	}
	probe.disconnect()
}
