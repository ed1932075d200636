package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/moha-project/moha/internal/agent"
	"github.com/moha-project/moha/internal/config"
	"github.com/moha-project/moha/internal/launch"
	"github.com/moha-project/moha/internal/status"
	"github.com/moha-project/moha/internal/testkit"
)

// startCluster starts n real brokers with in-process agents (no HAProxy)
// and waits until every agent is ready and sure of its interest.
func startCluster(t testing.TB, n int, configure ...func(*config.Cluster)) *launch.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opt := launch.Options{Nodes: n, LBPort: -1, Dir: t.TempDir(), NewAgent: newAgent, Logger: testLogger(t)}
	if len(configure) > 0 {
		opt.Configure = configure[0]
	}
	c, err := launch.Up(ctx, opt)
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	for _, node := range c.Config.Nodes {
		waitSettled(t, c, node.Name)
	}
	return c
}

// newAgent is launch.Options.NewAgent for in-process agents: launch does
// not import the agent, so the tests hand it the constructor.
func newAgent(cfg *config.Cluster, node string, log *slog.Logger) (launch.InProcessAgent, error) {
	a, err := agent.New(agent.Options{Cluster: cfg, Node: node, Logger: log})
	if err != nil {
		return nil, err // not a nil *agent.Agent in a non-nil interface
	}
	return a, nil
}

// agentOf returns node's in-process agent (nil when it is stopped or runs
// as a child process).
func agentOf(c *launch.Cluster, node string) *agent.Agent {
	a, _ := c.Agent(node).(*agent.Agent)
	return a
}

// startProcessCluster starts a cluster whose agents are child processes
// (`moha agent`, which a test may SIGKILL or SIGTERM) and waits until every
// node is ready; it is stopped when the test ends.
func startProcessCluster(t testing.TB, opt launch.Options) *launch.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opt.Dir, opt.AgentBinary, opt.Logger = t.TempDir(), testkit.MohaBinary(t), testLogger(t)
	c, err := launch.Up(ctx, opt)
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	for _, n := range c.Config.Nodes {
		if err := c.WaitReady(ctx, n.Name); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// waitSettled waits until node's agent is ready and no longer degraded.
func waitSettled(t testing.TB, c *launch.Cluster, node string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		s := agentOf(c, node).Status()
		if s.Ready && !s.Degraded {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready and settled after 15s: %s", node, statusJSON(s))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testLogger sends agent logs to the test log only when -v is given, so a
// failing run shows them and a passing one stays quiet.
func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() || os.Getenv("MOHA_TEST_LOGS") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

var waitFor = testkit.WaitFor

// agentsIdle waits until no running agent has a message in hand.
func agentsIdle(t *testing.T, c *launch.Cluster) {
	waitFor(t, 10*time.Second, "agents idle", func() bool {
		for _, n := range c.Config.Nodes {
			if a := agentOf(c, n.Name); a != nil {
				if st := a.Status(); st.ForwardQueue != 0 || st.InboundPending != 0 {
					return false
				}
			}
		}
		return true
	})
}

// peerKnows waits until on node `at` the peer `of` advertises filter, and
// at's data session holds what its peers need (messages matching it reach
// the agent).
func peerKnows(t testing.TB, c *launch.Cluster, at, of, filter string, want bool) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("%s to see %s advertise %q=%v", at, of, filter, want), func() bool {
		st := agentOf(c, at).Status()
		for _, p := range st.Peers {
			if p.Name == of {
				return slices.Contains(p.Interest, filter) == want && st.Data.Current
			}
		}
		return false
	})
}

// client is an MQTT v5 test client (paho.golang) that records what it receives.
type client struct {
	t    testing.TB
	id   string
	pc   *paho.Client
	msgs chan *paho.Publish
	// sessionPresent is the CONNACK's Session Present flag.
	sessionPresent bool
	mu             sync.Mutex
	got            []*paho.Publish
}

type clientOpt func(*paho.Connect)

func persistent(expiry uint32) clientOpt {
	return func(c *paho.Connect) {
		c.CleanStart = false
		c.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
	}
}

func keepAlive(s uint16) clientOpt { return func(c *paho.Connect) { c.KeepAlive = s } }

func will(topic string, payload []byte) clientOpt {
	return func(c *paho.Connect) {
		c.WillMessage = &paho.WillMessage{Topic: topic, Payload: payload, QoS: 1}
	}
}

// connect opens a v5 client session to addr.
func connect(t testing.TB, addr, id string, opts ...clientOpt) *client {
	t.Helper()
	cl, err := tryConnect(t, addr, id, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// tryConnect opens a v5 client session to addr, or says why it could not.
func tryConnect(t testing.TB, addr, id string, opts ...clientOpt) (*client, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	cl := &client{t: t, id: id, msgs: make(chan *paho.Publish, 100000)}
	cl.pc = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(r paho.PublishReceived) (bool, error) {
			cl.mu.Lock()
			cl.got = append(cl.got, r.Packet)
			cl.mu.Unlock()
			cl.msgs <- r.Packet
			return true, nil
		}},
	})
	cp := &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}
	for _, o := range opts {
		o(cp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := cl.pc.Connect(ctx, cp)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("connect %s to %s: %w", id, addr, err)
	}
	if ack.ReasonCode != 0 {
		_ = conn.Close()
		return nil, fmt.Errorf("connect %s: reason %d", id, ack.ReasonCode)
	}
	cl.sessionPresent = ack.SessionPresent
	t.Cleanup(func() { cl.drop() })
	return cl, nil
}

func (c *client) subscribe(filter string, qos byte) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sa, err := c.pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}})
	if err != nil {
		c.t.Fatalf("%s subscribe %q: %v", c.id, filter, err)
	}
	if len(sa.Reasons) != 1 || sa.Reasons[0] >= 0x80 {
		c.t.Fatalf("%s subscribe %q refused: %v", c.id, filter, sa.Reasons)
	}
}

func (c *client) unsubscribe(filter string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.pc.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{filter}}); err != nil {
		c.t.Fatalf("%s unsubscribe %q: %v", c.id, filter, err)
	}
}

func (c *client) publish(p *paho.Publish) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.pc.Publish(ctx, p); err != nil {
		c.t.Fatalf("%s publish %q: %v", c.id, p.Topic, err)
	}
}

func (c *client) pub(topic string, qos byte, payload string) {
	c.t.Helper()
	c.publish(&paho.Publish{Topic: topic, QoS: qos, Payload: []byte(payload)})
}

// expect waits for n messages and returns them.
func (c *client) expect(n int, timeout time.Duration) []*paho.Publish {
	c.t.Helper()
	out := make([]*paho.Publish, 0, n)
	deadline := time.After(timeout)
	for len(out) < n {
		select {
		case m := <-c.msgs:
			out = append(out, m)
		case <-deadline:
			c.t.Fatalf("%s: got %d of %d messages within %v: %v", c.id, len(out), n, timeout, topics(out))
		}
	}
	return out
}

// expectTopic waits until n distinct payloads arrived on topic, ignoring
// other topics (late duplicates of an earlier step), and returns the
// topic's messages in arrival order.
func (c *client) expectTopic(topic string, n int, timeout time.Duration) []*paho.Publish {
	c.t.Helper()
	var out []*paho.Publish
	distinct := map[string]bool{}
	deadline := time.After(timeout)
	for len(distinct) < n {
		select {
		case m := <-c.msgs:
			if m.Topic == topic {
				out = append(out, m)
				distinct[string(m.Payload)] = true
			}
		case <-deadline:
			c.t.Fatalf("%s: got %d of %d distinct messages on %q within %v", c.id, len(distinct), n, topic, timeout)
		}
	}
	return out
}

// expectOnly waits for the marker topic and fails if anything else arrives
// first: the marker is published after the messages that must not arrive,
// on the same path, so absence is proven by order rather than by waiting.
func (c *client) expectOnly(marker string, timeout time.Duration) {
	c.t.Helper()
	select {
	case m := <-c.msgs:
		if m.Topic != marker {
			c.t.Fatalf("%s: unexpected message on %q (payload %q) before marker %q", c.id, m.Topic, m.Payload, marker)
		}
	case <-time.After(timeout):
		c.t.Fatalf("%s: marker %q did not arrive within %v", c.id, marker, timeout)
	}
}

// disconnect ends the session with a DISCONNECT packet.
func (c *client) disconnect() {
	_ = c.pc.Disconnect(&paho.Disconnect{ReasonCode: 0})
}

// drop closes the connection without DISCONNECT (the will is published).
func (c *client) drop() {
	c.pc.TerminateConnectionForTest()
}

func topics(ms []*paho.Publish) []string {
	var s []string
	for _, m := range ms {
		s = append(s, m.Topic)
	}
	return s
}

func payloads(ms []*paho.Publish) []string {
	var s []string
	for _, m := range ms {
		s = append(s, string(m.Payload))
	}
	return s
}

func statusJSON(s status.Status) string {
	b, _ := json.MarshalIndent(s, "", "  ")
	return string(b)
}

// retainedOn returns the retained messages node's broker holds under filter
// (topic -> payload): a fresh subscriber gets them, then a marker published
// on its own node after them ends the list.
func retainedOn(t testing.TB, c *launch.Cluster, node, filter string) map[string]string {
	t.Helper()
	id := "read-" + node + "-" + strconv.FormatInt(time.Now().UnixNano(), 10)
	s := connect(t, c.MustNode(node).Broker.Address, id)
	defer s.disconnect()
	s.subscribe(filter, 1)
	s.subscribe(id, 1)
	connect(t, c.MustNode(node).Broker.Address, id+"-m").pub(id, 1, "marker")
	got := map[string]string{}
	for {
		m := s.expect(1, 5*time.Second)[0]
		if m.Topic == id {
			return got
		}
		got[m.Topic] = string(m.Payload)
	}
}

// followInterest configures a cluster whose data sessions follow the peers'
// interest (data_subscription interest) instead of taking every message.
func followInterest(c *config.Cluster) { c.DataSubscription = config.DataSubscriptionInterest }
