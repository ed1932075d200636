package agent_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
)

// TestInterestFollowsClients: subscribe, unsubscribe, an MQTT 3.1.1 clean
// disconnect and a clean-start takeover each change what the peer
// advertises within 1 s; an MQTT v5 session ended at disconnect and a
// keepalive timeout within seconds; a persistent session keeps its interest
// offline.
func TestInterestFollowsClients(t *testing.T) {
	c := startCluster(t, 2)
	const within = time.Second
	knows := func(filter string, want bool) {
		t.Helper()
		deadline := time.Now().Add(within)
		peerKnows(t, c, "node1", "node2", filter, want)
		if time.Now().After(deadline) {
			t.Fatalf("interest change for %q took longer than %v", filter, within)
		}
	}

	t.Run("unsubscribe", func(t *testing.T) {
		s := connect(t, addr(c, "node2"), "fi-unsub")
		s.subscribe("fi/unsub", 1)
		knows("fi/unsub", true)
		s.unsubscribe("fi/unsub")
		knows("fi/unsub", false)
	})
	t.Run("clean disconnect", func(t *testing.T) {
		conn := rawConnect311(t, addr(c, "node2"), "fi-clean")
		defer conn.Close()
		rawSubscribe311(t, conn, "fi/clean")
		knows("fi/clean", true)
		if _, err := conn.Write([]byte{0xe0, 0}); err != nil { // DISCONNECT
			t.Fatal(err)
		}
		knows("fi/clean", false)
	})
	t.Run("v5 clean start, no session expiry", func(t *testing.T) {
		// The log does not show that this session ended with its
		// connection: it is kept (over-stated) until the broker's
		// counters prove it gone, about a sys_interval later.
		s := connect(t, addr(c, "node2"), "fi-v5")
		s.subscribe("fi/v5", 1)
		knows("fi/v5", true)
		s.disconnect()
		start := time.Now()
		waitFor(t, 10*time.Second, "node1 to drop node2's fi/v5", func() bool {
			for _, p := range agentOf(c, "node1").Status().Peers {
				if p.Name == "node2" {
					return !slices.Contains(p.Interest, "fi/v5")
				}
			}
			return false
		})
		t.Logf("a v5 session that ended with its connection left the interest %v later", time.Since(start).Round(10*time.Millisecond))
	})
	t.Run("keepalive timeout", func(t *testing.T) {
		raw := rawSubscriber(t, addr(c, "node2"), "fi-silent", "fi/silent", 1)
		defer raw.Close()
		knows("fi/silent", true)
		// The client now stays silent. Mosquitto 2.0.11 checks keepalives
		// coarsely: it disconnects a k1 client about 5 s later.
		waitFor(t, 15*time.Second, "node1 to drop node2's fi/silent", func() bool {
			for _, p := range agentOf(c, "node1").Status().Peers {
				if p.Name == "node2" {
					return !slices.Contains(p.Interest, "fi/silent")
				}
			}
			return false
		})
	})
	t.Run("clean start takeover", func(t *testing.T) {
		old := connect(t, addr(c, "node2"), "fi-take")
		old.subscribe("fi/take", 1)
		knows("fi/take", true)
		connect(t, addr(c, "node2"), "fi-take") // same id, clean start, no subscriptions
		knows("fi/take", false)
	})
	t.Run("persistent session offline", func(t *testing.T) {
		s := connect(t, addr(c, "node2"), "fi-pers", persistent(300))
		s.subscribe("fi/pers/#", 1)
		knows("fi/pers/#", true)
		s.disconnect()
		// A later subscription proves the agent has read past the
		// disconnect line; the persistent session's interest must remain.
		probe := connect(t, addr(c, "node2"), "fi-probe")
		probe.subscribe("fi/probe", 1)
		knows("fi/probe", true)
		knows("fi/pers/#", true)
		pub := connect(t, addr(c, "node1"), "fi-pers-pub")
		pub.pub("fi/pers/while-away", 1, "queued")
		pub.pub("fi/probe", 1, "after")
		probe.expect(1, 5*time.Second) // the queued message crossed before this one
		back := connect(t, addr(c, "node2"), "fi-pers", persistent(300))
		got := back.expect(1, 5*time.Second)
		if got[0].Topic != "fi/pers/while-away" {
			t.Fatalf("got %q, want the message queued while away", got[0].Topic)
		}
	})
}

// rawSubscriber connects with a hand-made CONNECT (keepalive k seconds),
// subscribes, and then never sends another byte.
func rawSubscriber(t testing.TB, addr, id, filter string, k uint16) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	cp := packets.NewControlPacket(packets.CONNECT)
	cc := cp.Content.(*packets.Connect)
	cc.ProtocolName, cc.ProtocolVersion, cc.ClientID, cc.KeepAlive, cc.CleanStart = "MQTT", 5, id, k, true
	if _, err := cp.WriteTo(conn); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	if p, err := packets.ReadPacket(r); err != nil || p.Type != packets.CONNACK {
		t.Fatalf("raw connect: %v %v", p, err)
	}
	sp := packets.NewControlPacket(packets.SUBSCRIBE)
	sc := sp.Content.(*packets.Subscribe)
	sc.PacketID = 1
	sc.Subscriptions = []packets.SubOptions{{Topic: filter, QoS: 1}}
	if _, err := sp.WriteTo(conn); err != nil {
		t.Fatal(err)
	}
	if p, err := packets.ReadPacket(r); err != nil || p.Type != packets.SUBACK {
		t.Fatalf("raw subscribe: %v %v", p, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn
}

// TestDegradedOverstates: clients that subscribed while the agent was away
// are invisible in the log; the agent reports degraded, advertises # so
// nothing is lost, and recovers once the broker's counts match again.
func TestDegradedOverstates(t *testing.T) {
	c := startCluster(t, 2)
	c.StopAgent("node2")
	hidden := connect(t, addr(c, "node2"), "hidden")
	hidden.subscribe("hid/den", 1)
	if err := c.StartAgent(context.Background(), "node2"); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(context.Background(), "node2"); err != nil {
		t.Fatal(err)
	}
	st := agentOf(c, "node2").Status()
	if !st.Degraded {
		t.Fatalf("node2 not degraded after missing a subscription: %+v", st.Interest)
	}
	peerKnows(t, c, "node1", "node2", "#", true)
	pub := connect(t, addr(c, "node1"), "pub-hidden")
	pub.pub("hid/den", 1, "found")
	if got := hidden.expect(1, 5*time.Second); string(got[0].Payload) != "found" {
		t.Fatalf("got %q", got[0].Payload)
	}
	hidden.disconnect()
	waitSettled(t, c, "node2")
	peerKnows(t, c, "node1", "node2", "#", false)
}

// TestAgentRestartLosesNothing: messages accepted by a broker while its
// agent is down are forwarded when it returns (persistent data session);
// messages for a peer whose agent is down are buffered and delivered when
// it returns.
func TestAgentRestartLosesNothing(t *testing.T) {
	c := startCluster(t, 2)
	sub := connect(t, addr(c, "node2"), "rs-sub", persistent(300))
	sub.subscribe("rs/#", 1)
	peerKnows(t, c, "node1", "node2", "rs/#", true)
	pub := connect(t, addr(c, "node1"), "rs-pub")

	c.StopAgent("node1")
	for i := range 100 {
		pub.pub("rs/origin-down", 1, strconv.Itoa(i))
	}
	restart(t, c, "node1")
	checkSequence(t, sub.expectTopic("rs/origin-down", 100, 10*time.Second), 100)

	c.StopAgent("node2")
	for i := range 100 {
		pub.pub("rs/target-down", 1, strconv.Itoa(i))
	}
	restart(t, c, "node2")
	checkSequence(t, sub.expectTopic("rs/target-down", 100, 10*time.Second), 100)
}

func restart(t *testing.T, c interface {
	StartAgent(context.Context, string) error
	WaitReady(context.Context, string) error
}, node string) {
	t.Helper()
	if err := c.StartAgent(context.Background(), node); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(context.Background(), node); err != nil {
		t.Fatal(err)
	}
}

// checkSequence: payloads 0..n-1 each at least once, first copies in order
// (at-least-once: a copy may repeat after an agent stops mid-ack).
func checkSequence(t *testing.T, got []*paho.Publish, n int) {
	t.Helper()
	next := 0
	for _, m := range got {
		v, _ := strconv.Atoi(string(m.Payload))
		if v == next {
			next++
		}
	}
	if next != n {
		t.Fatalf("in-order prefix %d of %d: %v", next, n, payloads(got))
	}
}

// TestLinksAuthenticate: a stranger speaking garbage, or claiming to be a
// node it cannot prove, is refused, logged and counted; the agents carry on.
func TestLinksAuthenticate(t *testing.T) {
	c := startCluster(t, 2)
	target := c.MustNode("node2").Link
	for _, junk := range [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		{0x10, 0xff, 0xff, 0xff, 0x7f},
		[]byte("MOHA\x09garbage-version"),
	} {
		conn, err := net.Dial("tcp", target)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = conn.Write(junk)
		_ = conn.SetReadDeadline(time.Now().Add(6 * time.Second))
		_, _ = io.Copy(io.Discard, conn) // the agent closes the connection
		conn.Close()
	}
	waitFor(t, 5*time.Second, "rejections counted", func() bool {
		return metricSum(t, c.MustNode("node2").HTTP, "moha_link_rejected_total") >= 3
	})
	sub := connect(t, addr(c, "node2"), "auth-sub")
	sub.subscribe("auth/ok", 1)
	peerKnows(t, c, "node1", "node2", "auth/ok", true)
	connect(t, addr(c, "node1"), "auth-pub").pub("auth/ok", 1, "still works")
	sub.expect(1, 5*time.Second)
}

// metricSum scrapes /metrics and sums every sample of the named metric.
func metricSum(t testing.TB, httpAddr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || (len(line) > len(name) && line[len(name)] != '{' && line[len(name)] != ' ') {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// TestAwkwardClients: ids and filters with spaces, and a 64 KiB topic.
func TestAwkwardClients(t *testing.T) {
	c := startCluster(t, 2)
	s := connect(t, addr(c, "node2"), "id with 1 spaces 0")
	s.subscribe("topic with space/+", 1)
	peerKnows(t, c, "node1", "node2", "topic with space/+", true)
	big := connect(t, addr(c, "node2"), "big-sub")
	big.subscribe("big/#", 1)
	peerKnows(t, c, "node1", "node2", "big/#", true)
	pub := connect(t, addr(c, "node1"), "awk-pub")
	pub.pub("topic with space/x", 1, "spaced")
	if got := s.expect(1, 5*time.Second); got[0].Topic != "topic with space/x" {
		t.Fatalf("got %q", got[0].Topic)
	}
	long := "big/" + strings.Repeat("t", 65535-4)
	pub.pub(long, 1, "long")
	if got := big.expect(1, 5*time.Second); got[0].Topic != long {
		t.Fatalf("64 KiB topic not delivered intact (len %d)", len(got[0].Topic))
	}
	if st := agentOf(c, "node2").Status(); st.Degraded {
		t.Fatalf("node2 degraded by awkward clients: %s", st.DegradedReason)
	}
}

// TestExpiredV5SessionsLeaveInterest: 1000 MQTT v5 clients connect with a
// persistent-looking session (clean start off) but session expiry 0,
// subscribe and disconnect. The log never says their sessions ended; the
// agent learns it from the broker's client total and the advertised
// interest returns to empty within 30 s.
func TestExpiredV5SessionsLeaveInterest(t *testing.T) {
	c := startCluster(t, 3)
	const clients = 1000
	var wg sync.WaitGroup
	for w := range 10 {
		wg.Go(func() {
			for i := w; i < clients; i += 10 {
				id := "exp-" + strconv.Itoa(i)
				cl := connect(t, addr(c, "node2"), id, persistent(0))
				cl.subscribe("exp/"+strconv.Itoa(i), 0)
				cl.disconnect()
			}
		})
	}
	wg.Wait()
	start := time.Now()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := agentOf(c, "node2").Status()
		if !st.Degraded && len(st.Advertised) == 0 && st.Interest.Clients == 0 {
			break
		}
		if time.Now().After(deadline) {
			st.Advertised = st.Advertised[:min(5, len(st.Advertised))]
			t.Fatalf("node2's interest not empty 30s after the last disconnect: %s", statusJSON(st))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("interest empty %v after the last disconnect", time.Since(start).Round(10*time.Millisecond))
	waitFor(t, 5*time.Second, "node1 to see node2's empty interest", func() bool {
		for _, p := range agentOf(c, "node1").Status().Peers {
			if p.Name == "node2" {
				return p.InterestFilters == 0
			}
		}
		return false
	})
}
