package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/moha-project/moha/internal/config"
	"github.com/moha-project/moha/internal/launch"
	"github.com/moha-project/moha/internal/placement"
	"github.com/moha-project/moha/internal/status"
)

// TestSessionSurvivesNodeLoss (issue 16): persistent-session subscribers
// (two MQTT 3.1.1 on paho.mqtt.golang, two MQTT v5 on paho.golang) connect
// through HAProxy and land on node3; publishers on node1 and node2 send
// them QoS 1 and QoS 2 messages without pause. node3's broker and agent are
// killed (SIGKILL). Each subscriber reconnects through HAProxy with clean
// start 0 and must get session present = 1 and every message whose publish
// was acknowledged — including those published while it had no connection.
func TestSessionSurvivesNodeLoss(t *testing.T) { nodeLoss(t, 1) }

// TestSessionLostWithoutReplicas: the same with session_replicas 0, as
// before issue 16 — the sessions are gone with their node (what the test
// above would see without replication).
func TestSessionLostWithoutReplicas(t *testing.T) { nodeLoss(t, 0) }

func nodeLoss(t *testing.T, replicas int) {
	configure := func(c *config.Cluster) { c.SessionReplicas = &replicas }
	c := startProcessCluster(t, launch.Options{Nodes: 3, LBPort: 0, Configure: configure})
	ids := idsHomedAt(t, c, "node3", 4)
	subs := make([]*durableSub, len(ids))
	for i, id := range ids {
		subs[i] = newDurableSub(t, c.LB, id, i%2 == 0)
		if _, err := subs[i].connect(t); err != nil {
			t.Fatal(err)
		}
		subs[i].subscribe(t, "rep/"+id, byte(1+i%2))
	}
	for _, id := range ids {
		if replicas > 0 {
			waitReplicated(t, c, id)
		} else {
			waitWanted(t, c, "rep/"+id)
		}
	}

	acked := newAckLog()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, node := range []string{"node1", "node2"} {
		pub := connect(t, addr(c, node), "rep-pub-"+node)
		wg.Go(func() { publishUntil(t, pub, ids, byte(1+i), stop, acked) })
	}
	acked.waitCount(t, 200)
	for _, s := range subs {
		if s.v311 && !s.v3.IsConnectionOpen() {
			t.Fatalf("%s lost its connection before the kill: its replica's connections must not take it over", s.id)
		}
	}
	killed := time.Now()
	c.Broker("node3").Kill()
	c.AgentProcess("node3").Kill()

	var failover time.Duration
	for _, s := range subs {
		present := s.reconnect(t, 30*time.Second)
		if replicas == 0 {
			if present {
				t.Fatalf("%s resumed a session on another node without replicas", s.id)
			}
			continue
		}
		if !present {
			t.Fatalf("%s (v3.1.1 %v) resumed with session present 0", s.id, s.v311)
		}
		failover = max(failover, time.Since(killed))
	}
	acked.waitCount(t, acked.count()+200) // more after the failover
	close(stop)
	wg.Wait()
	if replicas == 0 {
		return
	}

	dups := 0
	for _, s := range subs {
		want := acked.forTopic("rep/" + s.id)
		s.waitAll(t, want, 20*time.Second)
		dups += s.received() - len(want)
	}
	t.Logf("%d messages acknowledged to publishers, all received; failover (kill to the last resumed session) %v; %d duplicates",
		acked.count(), failover.Round(time.Millisecond), dups)

	// A clean start ends a session and, with it, its replica.
	for _, s := range subs {
		s.disconnect()
		s.cleanStart(t)
	}
	waitFor(t, 15*time.Second, "the replicas to end after clean starts", func() bool {
		for _, n := range []string{"node1", "node2"} {
			if r := nodeStatus(t, c, n).Replication; r.Kept != 0 || r.Replicated != 0 {
				return false
			}
		}
		return true
	})
}

// idsHomedAt returns n client ids whose bucket order starts with node.
func idsHomedAt(t *testing.T, c *launch.Cluster, node string, n int) []string {
	var out []string
	names := c.Config.NodeNames()
	for i := 0; len(out) < n; i++ {
		id := "durable-" + strconv.Itoa(i)
		if placement.Order(placement.Bucket(id), names)[0] == node {
			out = append(out, id)
		}
	}
	return out
}

// waitReplicated waits until some node other than id's home keeps its
// replica and every node routes its filter there.
func waitReplicated(t *testing.T, c *launch.Cluster, id string) {
	t.Helper()
	waitFor(t, 15*time.Second, id+"'s replica", func() bool {
		kept := 0
		for _, n := range []string{"node1", "node2"} {
			kept += nodeStatus(t, c, n).Replication.Kept
		}
		return kept >= 1 && nodeStatus(t, c, "node3").Replication.Replicated >= 1
	})
	waitWanted(t, c, "rep/"+id)
}

// waitWanted waits until node1 and node2 each see a peer advertise filter.
func waitWanted(t *testing.T, c *launch.Cluster, filter string) {
	t.Helper()
	waitFor(t, 15*time.Second, "node1 and node2 to route "+filter, func() bool {
		for _, n := range []string{"node1", "node2"} {
			wanting := 0
			for _, p := range nodeStatus(t, c, n).Peers {
				for _, f := range p.Interest {
					if f == filter {
						wanting++
					}
				}
			}
			if wanting == 0 {
				return false
			}
		}
		return true
	})
}

func nodeStatus(t *testing.T, c *launch.Cluster, node string) status.Status {
	t.Helper()
	resp, err := http.Get("http://" + c.MustNode(node).HTTP + "/status")
	if err != nil {
		return status.Status{}
	}
	defer resp.Body.Close()
	var s status.Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatalf("%s /status: %v", node, err)
	}
	return s
}

// ackLog records, per topic, the payloads whose publish was acknowledged.
type ackLog struct {
	mu    sync.Mutex
	byTop map[string][]string
	n     int
}

func newAckLog() *ackLog { return &ackLog{byTop: map[string][]string{}} }

func (l *ackLog) add(topic, payload string) {
	l.mu.Lock()
	l.byTop[topic] = append(l.byTop[topic], payload)
	l.n++
	l.mu.Unlock()
}

func (l *ackLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

func (l *ackLog) forTopic(topic string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.byTop[topic]...)
}

func (l *ackLog) waitCount(t *testing.T, n int) {
	t.Helper()
	waitFor(t, 20*time.Second, fmt.Sprintf("%d acknowledged publishes", n), func() bool { return l.count() >= n })
}

// publishUntil publishes to the topics in turn, at qos, until stop closes.
func publishUntil(t *testing.T, pub *client, ids []string, qos byte, stop <-chan struct{}, acked *ackLog) {
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		topic := "rep/" + ids[i%len(ids)]
		payload := pub.id + "/" + strconv.Itoa(i)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := pub.pc.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(payload)})
		cancel()
		if err != nil {
			t.Errorf("publish %s: %v", payload, err)
			return
		}
		acked.add(topic, payload)
	}
}

// durableSub is a persistent-session subscriber: MQTT 3.1.1 (paho.mqtt.golang,
// clean session 0) or MQTT v5 (paho.golang, clean start 0, expiry 1 h).
type durableSub struct {
	id, lb string
	v311   bool
	v3     mqtt.Client
	v5     *client

	mu   sync.Mutex
	got  map[string]int // payload -> copies
	seen chan struct{}  // capacity 1: something arrived
}

func newDurableSub(t *testing.T, lb, id string, v311 bool) *durableSub {
	return &durableSub{id: id, lb: lb, v311: v311, got: map[string]int{}, seen: make(chan struct{}, 1)}
}

func (s *durableSub) record(payload string) {
	s.mu.Lock()
	s.got[payload]++
	s.mu.Unlock()
	select {
	case s.seen <- struct{}{}:
	default:
	}
}

// connect connects once, clean start 0; it reports session present.
func (s *durableSub) connect(t *testing.T) (bool, error) {
	if s.v311 {
		opts := mqtt.NewClientOptions().AddBroker("tcp://" + s.lb).SetClientID(s.id).SetCleanSession(false).
			SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(3 * time.Second).
			SetKeepAlive(5 * time.Second).
			SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { s.record(string(m.Payload())) })
		cl := mqtt.NewClient(opts)
		tok := cl.Connect()
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			return false, fmt.Errorf("connect %s: %v", s.id, tok.Error())
		}
		s.v3 = cl
		t.Cleanup(func() { cl.Disconnect(0) })
		return tok.(*mqtt.ConnectToken).SessionPresent(), nil
	}
	cl, err := tryConnect(t, s.lb, s.id, persistent(3600))
	if err != nil {
		return false, err
	}
	cl.pc.AddOnPublishReceived(func(r paho.PublishReceived) (bool, error) {
		s.record(string(r.Packet.Payload))
		return true, nil
	})
	s.v5 = cl
	return cl.sessionPresent, nil
}

func (s *durableSub) disconnect() {
	if s.v311 {
		s.v3.Disconnect(0)
		return
	}
	s.v5.disconnect()
}

// cleanStart connects with clean start 1 and leaves.
func (s *durableSub) cleanStart(t *testing.T) {
	t.Helper()
	if s.v311 {
		cl := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + s.lb).SetClientID(s.id).SetCleanSession(true).SetProtocolVersion(4))
		if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("%s clean connect: %v", s.id, tok.Error())
		}
		cl.Disconnect(0)
		return
	}
	connect(t, s.lb, s.id).disconnect()
}

func (s *durableSub) subscribe(t *testing.T, filter string, qos byte) {
	t.Helper()
	if s.v311 {
		tok := s.v3.Subscribe(filter, qos, nil)
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("%s subscribe: %v", s.id, tok.Error())
		}
		return
	}
	s.v5.subscribe(filter, qos)
}

// reconnect connects again until it succeeds (HAProxy first has to see the
// node down) and reports session present.
func (s *durableSub) reconnect(t *testing.T, timeout time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		present, err := s.connect(t)
		if err == nil {
			return present
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s could not reconnect within %v: %v", s.id, timeout, err)
		}
		time.Sleep(100 * time.Millisecond) // a retry interval, as a client library's
	}
}

func (s *durableSub) received() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, k := range s.got {
		n += k
	}
	return n
}

// waitAll waits until every payload in want arrived.
func (s *durableSub) waitAll(t *testing.T, want []string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		var missing []string
		for _, p := range want {
			if s.got[p] == 0 {
				missing = append(missing, p)
			}
		}
		s.mu.Unlock()
		if len(missing) == 0 {
			return
		}
		select {
		case <-s.seen:
		case <-deadline:
			t.Fatalf("%s (v3.1.1 %v): %d of %d acknowledged messages lost, e.g. %v", s.id, s.v311, len(missing), len(want), missing[:min(5, len(missing))])
		}
	}
}

// TestReplicaEndKicksNoClient: a client's clean start ends its session's
// replica on another node; the connection that ends it there is the
// agent's own and must not be announced as the client's (it would take
// the client's new connection over).
func TestReplicaEndKicksNoClient(t *testing.T) {
	c := startCluster(t, 3)
	for i := range 5 {
		id := "ending-" + strconv.Itoa(i)
		cl := connect(t, addr(c, "node1"), id, persistent(3600))
		cl.subscribe("ending/"+id, 1)
		waitFor(t, 10*time.Second, id+"'s replica", func() bool { return keptReplicas(c) == 1 })
		cl.disconnect()
		again := connect(t, addr(c, "node1"), id) // clean start: the session and its replica end
		waitFor(t, 10*time.Second, id+"'s replica to end", func() bool { return keptReplicas(c) == 0 })
		select {
		case <-again.pc.Done():
			t.Fatalf("%s: the client's clean-start connection was closed: ending its replica took it over", id)
		case <-time.After(time.Second): // the replica's end has been logged and applied by then
		}
		again.disconnect()
	}
}

func keptReplicas(c *launch.Cluster) int {
	n := 0
	for _, node := range c.Config.Nodes {
		n += agentOf(c, node.Name).Status().Replication.Kept
	}
	return n
}
