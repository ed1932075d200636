package mesh

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moha-project/moha/internal/message"
	"github.com/moha-project/moha/internal/testkit"
)

var testSecret = []byte("0123456789abcdef-test-secret")

var waitFor = testkit.WaitFor

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("CLUSTER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// closedAddr returns a 127.0.0.1 address nobody listens on (for peers that
// must never be dialed, or are down).
func closedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func testConfig(t testing.TB, node string, peers map[string]string) Config {
	return Config{
		Node:       node,
		Listen:     "127.0.0.1:0",
		Peers:      peers,
		Secret:     testSecret,
		BackoffMin: 10 * time.Millisecond,
		BackoffMax: 50 * time.Millisecond,
		Logger:     testLogger(t).With("test_node", node),
	}
}

// recorder is a Handlers implementation that remembers everything.
type recorder struct {
	mu        sync.Mutex
	msgs      map[string][]message.Message
	interest  map[string]map[string]bool // current view per peer
	events    map[string][]interestEvent
	linkState map[string]bool
	// onDeliver, when set, replaces the immediate ack.
	onDeliver func(peer string, m message.Message, ack func())
}

type interestEvent struct {
	replace        bool
	added, removed []string
}

func newRecorder() *recorder {
	return &recorder{
		msgs:      map[string][]message.Message{},
		interest:  map[string]map[string]bool{},
		events:    map[string][]interestEvent{},
		linkState: map[string]bool{},
	}
}

func (r *recorder) handlers() Handlers {
	return Handlers{
		Deliver: func(peer string, m message.Message, ack func()) {
			r.mu.Lock()
			r.msgs[peer] = append(r.msgs[peer], m)
			fn := r.onDeliver
			r.mu.Unlock()
			if fn != nil {
				fn(peer, m, ack)
				return
			}
			ack()
		},
		Interest: func(peer string, ch InterestChange) {
			replace, added, removed := ch.Replace, ch.Added, ch.Removed
			r.mu.Lock()
			defer r.mu.Unlock()
			view := r.interest[peer]
			if replace || view == nil {
				view = map[string]bool{}
				r.interest[peer] = view
			}
			for _, f := range added {
				view[f] = true
			}
			for _, f := range removed {
				delete(view, f)
			}
			r.events[peer] = append(r.events[peer], interestEvent{replace, slices.Clone(added), slices.Clone(removed)})
		},
		LinkState: func(peer string, up bool) {
			r.mu.Lock()
			r.linkState[peer] = up
			r.mu.Unlock()
		},
	}
}

func (r *recorder) count(peer string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs[peer])
}

// msgsFrom returns the messages received from peer, in order.
func (r *recorder) msgsFrom(peer string) []message.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs[peer])
}

func (r *recorder) view(peer string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for f := range r.interest[peer] {
		out = append(out, f)
	}
	slices.Sort(out)
	return out
}

func (r *recorder) interestEvents(peer string) []interestEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events[peer])
}

func (r *recorder) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ms := range r.msgs {
		n += len(ms)
	}
	for _, evs := range r.events {
		n += len(evs)
	}
	return n
}

// testMesh is a running Mesh with its registry.
type testMesh struct {
	*Mesh
	reg    *prometheus.Registry
	runErr chan error
	once   sync.Once
}

func newTestRegistry() *prometheus.Registry { return prometheus.NewRegistry() }

// startMesh creates and runs a mesh, waits until it listens, and stops it
// in cleanup (checking that Run returned nil).
func startMesh(t testing.TB, cfg Config, h Handlers, tweak ...func(*Mesh)) *testMesh {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	m, err := New(cfg, h)
	if err != nil {
		t.Fatalf("New(%s): %v", cfg.Node, err)
	}
	for _, f := range tweak {
		f(m)
	}
	return runMesh(t, m, reg)
}

// runMesh runs m until cleanup.
func runMesh(t testing.TB, m *Mesh, reg *prometheus.Registry) *testMesh {
	t.Helper()
	tm := &testMesh{Mesh: m, reg: reg, runErr: make(chan error, 1)}
	go func() { tm.runErr <- m.Run(context.Background()) }()
	select {
	case <-m.Ready():
	case err := <-tm.runErr:
		t.Fatalf("Run(%s): %v", m.cfg.Node, err)
	case <-time.After(5 * time.Second):
		t.Fatalf("mesh %s not ready", m.cfg.Node)
	}
	t.Cleanup(func() { tm.stop(t) })
	return tm
}

// stop closes the mesh and checks Run's result; safe to call twice.
func (tm *testMesh) stop(t testing.TB) {
	t.Helper()
	if err := tm.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	tm.once.Do(func() {
		if err := <-tm.runErr; err != nil {
			t.Errorf("Run returned %v", err)
		}
	})
}

func (tm *testMesh) addr() string { return tm.Addr().String() }

func (tm *testMesh) peerStatus(name string) PeerStatus {
	for _, s := range tm.Status() {
		if s.Name == name {
			return s
		}
	}
	return PeerStatus{}
}

func (tm *testMesh) up(name string) bool { return tm.peerStatus(name).Up }

// metric returns the value of the counter or gauge name with exactly the
// given labels (0 when absent).
func metric(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue next
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// metricSum adds every series of name.
func metricSum(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range families {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// fakePeer speaks the protocol by hand to a mesh, as the dialer.
type fakePeer struct {
	t    testing.TB
	conn net.Conn
	br   *bufio.Reader
}

// dialFake connects to addr as node, authenticating with secret.
func dialFake(t testing.TB, addr, node, acceptor string, secret []byte) (*fakePeer, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(conn)
	hs := &handshaker{node: node, epoch: 42, secret: secret}
	if _, err := hs.dial(conn, br, acceptor); err != nil {
		return nil, err
	}
	return &fakePeer{t: t, conn: conn, br: br}, nil
}

func (f *fakePeer) send(fr frame) {
	f.t.Helper()
	if _, err := f.conn.Write(appendFrame(nil, fr.typ, encodeFrameBody(nil, &fr))); err != nil {
		f.t.Fatalf("fake peer write: %v", err)
	}
}

// next returns the next frame that is not a heartbeat or a broker state
// (every link starts with one).
func (f *fakePeer) next() frame {
	f.t.Helper()
	f.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		typ, body, err := readFrame(f.br, maxFrameSize)
		if err != nil {
			f.t.Fatalf("fake peer read: %v", err)
		}
		fr, err := decodeFrame(typ, body)
		if err != nil {
			f.t.Fatalf("fake peer decode: %v", err)
		}
		if fr.typ != frameHeartbeat && fr.typ != frameBroker {
			return fr
		}
	}
}

// expectClosed reads until the mesh closes the connection.
func expectClosed(t testing.TB, conn net.Conn) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var buf [4096]byte
	for {
		_, err := conn.Read(buf[:])
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("mesh did not close the connection")
		}
		return
	}
}

// msgEqual compares messages treating nil and empty slices alike.
func msgEqual(a, b message.Message) bool {
	if a.Topic != b.Topic || !bytes.Equal(a.Payload, b.Payload) || a.QoS != b.QoS || a.Retain != b.Retain {
		return false
	}
	pa, pb := a.Props, b.Props
	if (pa.PayloadFormat == nil) != (pb.PayloadFormat == nil) || (pa.PayloadFormat != nil && *pa.PayloadFormat != *pb.PayloadFormat) {
		return false
	}
	if (pa.MessageExpiry == nil) != (pb.MessageExpiry == nil) || (pa.MessageExpiry != nil && *pa.MessageExpiry != *pb.MessageExpiry) {
		return false
	}
	return pa.ContentType == pb.ContentType && pa.ResponseTopic == pb.ResponseTopic &&
		bytes.Equal(pa.CorrelationData, pb.CorrelationData) && slices.Equal(pa.User, pb.User)
}

// heldAcks keeps the acks of what a peer receives until the test gives
// them, so that the sender sees a peer that takes messages but has not
// acknowledged them yet.
type heldAcks struct {
	mu   sync.Mutex
	acks []func()
}

// recorder returns a recorder whose deliveries' acks h keeps.
func (h *heldAcks) recorder() *recorder {
	r := newRecorder()
	r.onDeliver = func(_ string, _ message.Message, ack func()) {
		h.mu.Lock()
		h.acks = append(h.acks, ack)
		h.mu.Unlock()
	}
	return r
}

// count returns how many acks were kept (given or not).
func (h *heldAcks) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.acks)
}

// ack gives the ack of the i-th delivery.
func (h *heldAcks) ack(i int) {
	h.mu.Lock()
	ack := h.acks[i]
	h.mu.Unlock()
	ack()
}

// ackAll gives every ack kept so far (they stay counted).
func (h *heldAcks) ackAll() {
	h.mu.Lock()
	acks := slices.Clone(h.acks)
	h.mu.Unlock()
	for _, ack := range acks {
		ack()
	}
}

// take removes and returns the acks kept so far.
func (h *heldAcks) take() []func() {
	h.mu.Lock()
	defer h.mu.Unlock()
	acks := h.acks
	h.acks = nil
	return acks
}
