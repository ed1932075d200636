package agent_test

import (
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/moha-project/moha/internal/launch"
)

// closedWithin reports whether c's connection ends within d.
func (c *client) closedWithin(d time.Duration) bool {
	select {
	case <-c.pc.Done():
		return true
	case <-time.After(d):
		return false
	}
}

// TestTakeoverAcrossNodes: a client id is connected on one node at most. A
// newer connection on another node closes the older one within 1 s, never
// the newer one (MQTT 5 and 3.1.1).
func TestTakeoverAcrossNodes(t *testing.T) {
	c := startCluster(t, 3)
	t.Run("mqtt5", func(t *testing.T) {
		old := connect(t, addr(c, "node1"), "tk-5")
		agentSees(t, c, "node1", "tk-5")
		newer := connect(t, addr(c, "node2"), "tk-5")
		if !old.closedWithin(time.Second) {
			t.Fatal("older connection on node1 still open 1 s after the id connected on node2")
		}
		newer.subscribe("tk/5", 1)
		newer.pub("tk/5", 1, "still here")
		newer.expect(1, 5*time.Second)
	})
	t.Run("mqtt311", func(t *testing.T) {
		old := rawConnect311(t, addr(c, "node1"), "tk-311")
		defer old.Close()
		agentSees(t, c, "node1", "tk-311")
		newer := connect(t, addr(c, "node2"), "tk-311")
		_ = old.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := io.Copy(io.Discard, old); err != nil {
			t.Fatalf("older 3.1.1 connection not closed within 1 s: %v", err)
		}
		if newer.closedWithin(200 * time.Millisecond) {
			t.Fatal("the newer connection was closed")
		}
	})
}

// TestTakeoverStorm: 200 client ids flip between the nodes four times; in
// the end each id is connected exactly once (its newest connection), and
// the agents' own takeover connections start no further round.
func TestTakeoverStorm(t *testing.T) {
	c := startCluster(t, 3)
	const ids, rounds = 200, 4
	conns := make([][]*client, ids)
	for r := range rounds {
		node := []string{"node1", "node2", "node3"}[r%3]
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for i := w; i < ids; i += 8 {
					conns[i] = append(conns[i], connect(t, addr(c, node), "storm-"+strconv.Itoa(i)))
				}
			})
		}
		wg.Wait()
		waitFor(t, 10*time.Second, node+"'s agent to see round "+strconv.Itoa(r), func() bool {
			seen := agentOf(c, node).Clients()
			for i := range ids {
				if _, ok := seen["storm-"+strconv.Itoa(i)]; !ok {
					return false
				}
			}
			return true
		})
	}
	for i, cs := range conns {
		for r, cl := range cs[:rounds-1] {
			if !cl.closedWithin(10 * time.Second) {
				t.Fatalf("id %d: connection of round %d still open", i, r)
			}
		}
		if cs[rounds-1].closedWithin(0) {
			t.Fatalf("id %d: the newest connection was closed", i)
		}
	}
	want := float64(ids * (rounds - 1))
	waitFor(t, 5*time.Second, "takeover counts to settle", func() bool {
		return takeovers(t, c) >= want
	})
	// One more subscription round trip on each node proves the agents have
	// read every log line the takeovers caused.
	for _, n := range []string{"node1", "node2", "node3"} {
		probe := connect(t, addr(c, n), "storm-probe-"+n)
		probe.subscribe("storm/probe", 1)
		peerKnows(t, c, map[string]string{"node1": "node2", "node2": "node3", "node3": "node1"}[n], n, "storm/probe", true)
	}
	got := takeovers(t, c)
	if got != want {
		t.Fatalf("%v takeovers, want exactly %v (one per newer connection, none from the agents' own)", got, want)
	}
	for i, cs := range conns {
		if cs[rounds-1].closedWithin(0) {
			t.Fatalf("id %d: the newest connection was closed", i)
		}
	}
}

// takeovers sums the takeover counters of every node.
func takeovers(t testing.TB, c *launch.Cluster) float64 {
	var sum float64
	for _, n := range c.Config.Nodes {
		sum += metricSum(t, n.HTTP, "moha_takeovers_total")
	}
	return sum
}

// agentSees waits until node's agent has read the client's connect line:
// two connections made closer together than that are ordered by when the
// agents saw them, not by when the brokers accepted them.
func agentSees(t testing.TB, c *launch.Cluster, node, id string) {
	t.Helper()
	waitFor(t, 5*time.Second, node+" to see client "+id, func() bool {
		_, ok := agentOf(c, node).Clients()[id]
		return ok
	})
}

// rawConnect311 opens an MQTT 3.1.1 connection with a hand-made CONNECT.
func rawConnect311(t testing.TB, addr, id string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	// The CONNECT bytes by hand [MQTT-3.1]: protocol "MQTT" level 4, clean
	// session, keepalive 30 s, the client id.
	body := append([]byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 30, byte(len(id) >> 8), byte(len(id))}, id...)
	if _, err := conn.Write(append([]byte{0x10, byte(len(body))}, body...)); err != nil {
		t.Fatal(err)
	}
	var connack [4]byte // 3.1.1 CONNACK: 0x20 2 flags code
	if _, err := io.ReadFull(conn, connack[:]); err != nil || connack[0] != 0x20 || connack[3] != 0 {
		t.Fatalf("raw 3.1.1 connect: % x %v", connack, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn
}

// rawSubscribe311 subscribes conn (an MQTT 3.1.1 connection) to filter at
// QoS 1 and waits for the SUBACK.
func rawSubscribe311(t testing.TB, conn net.Conn, filter string) {
	t.Helper()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	defer conn.SetDeadline(time.Time{})
	body := append([]byte{0, 1, byte(len(filter) >> 8), byte(len(filter))}, filter...)
	body = append(body, 1)
	if _, err := conn.Write(append([]byte{0x82, byte(len(body))}, body...)); err != nil {
		t.Fatal(err)
	}
	var suback [5]byte // 0x90 3 id id code
	if _, err := io.ReadFull(conn, suback[:]); err != nil || suback[0] != 0x90 || suback[4] >= 0x80 {
		t.Fatalf("raw 3.1.1 subscribe: % x %v", suback, err)
	}
}

// TestCleanStartEndsSessionElsewhere: a client that connects with clean
// start on one node ends the session it left offline on another, as a single
// broker discards it: its subscriptions stop drawing messages there, and the
// newer connection is not disturbed by the agent ending the old session.
func TestCleanStartEndsSessionElsewhere(t *testing.T) {
	c := startCluster(t, 2)
	old := connect(t, addr(c, "node1"), "moved-x", persistent(600))
	old.subscribe("moved/x", 1)
	peerKnows(t, c, "node2", "node1", "moved/x", true)
	old.disconnect()
	waitFor(t, 5*time.Second, "node1's agent to see moved-x offline", func() bool {
		st := agentOf(c, "node1").Status().Interest
		return st.Clients == 1 && st.Connected == 0
	})
	peerKnows(t, c, "node2", "node1", "moved/x", true) // a persistent session keeps its interest

	newer := connect(t, addr(c, "node2"), "moved-x")
	peerKnows(t, c, "node2", "node1", "moved/x", false)
	waitFor(t, 5*time.Second, "node1's agent to forget moved-x", func() bool {
		_, known := agentOf(c, "node1").Clients()["moved-x"]
		return !known
	})
	if newer.closedWithin(500 * time.Millisecond) {
		t.Fatal("the clean-start connection on node2 was closed")
	}
	http := c.MustNode("node1").HTTP
	if ended, kicked := metricSum(t, http, "moha_ended_sessions_total"), metricSum(t, http, "moha_takeovers_total"); ended != 1 || kicked != 0 {
		t.Fatalf("node1 ended %v sessions and closed %v connections, want 1 and 0", ended, kicked)
	}
}
